"""The training stage: label tables -> controller checkpoints (+ ``checkpoints``, ``train_log``).

- ``load_clips``: every labelled clip at the model's size, with the VAE latents of
  all its frames and the CLIP embeddings of the frames a window may start on,
  computed once (cached under ``cache/train/``), its entities' trajectories, radii
  and vectors (``entity_embeddings``) and panoptic ids.
- ``batch_for_step``: the batch of step s is a pure function of (seed, s): random
  clips, a random window of each (``train.windows``, ``train.reverse``), a random
  entity subset, maps and loss masks. So a resumed run
  sees exactly the batches an uninterrupted one would.
- ``train_loop``: AdamW on the controller only; checkpoints every N steps with the
  optimizer, scheduler, EMA and RNG state; one function for one process and for
  each Ray Train (DDP) worker.
- ``fit_tiny_base``: for the CPU demo, fit the embedded tiny VAE and base UNet first.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import pickle
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from tqdm import tqdm

from core.config import Config, ModelSettings
from core.geometry import rescale
from core.media import load_cached_clip, read_blob, resize_clip, write_blob
from core.tables import Workdir, now_utc
from model import training as T
from model.controlnet import EntityInputs
from model.maps import condition_channels, paint_order, render_conditions
from model.unet_control import controlled_prediction, unet_forward_with_control

STAGE = "train"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read; the message says which file and what to do."""


# --- data --------------------------------------------------------------------------


@dataclass
class Clip:
    """One labelled video at the model's size; training draws windows ("views") of it."""

    video_id: str
    latents: torch.Tensor  # (T, C, h, w) every labelled frame, scaled by the VAE's scaling factor
    first_frames: dict[int, tuple[torch.Tensor, torch.Tensor]]  # frame -> ((3, H, W) in [-1, 1], (1, D) CLIP embedding)
    entity_ids: np.ndarray  # (N,)
    centers: torch.Tensor  # (T, N, 2) model pixels
    radii: torch.Tensor  # (T, N) incircle radius, model pixels
    usable: np.ndarray  # (T, N) visible and large enough to condition on, when that frame comes first
    vectors: torch.Tensor | None  # (N, C)
    ids: np.ndarray  # (T, H, W) panoptic ids at model size
    views: list[tuple[int, bool]]  # (start, backwards): windows of num_frames with a usable entity on their first frame

    @staticmethod
    def window(start: int, backwards: bool, length: int) -> np.ndarray:
        """The frame indices of a view, in the order the model sees them."""
        idx = np.arange(start, start + length)
        return idx[::-1].copy() if backwards else idx


def clip_views(n_frames: int, length: int, windows: bool, reverse: bool) -> list[tuple[int, bool]]:
    """Every (start, backwards) window of ``length`` frames that ``train.windows`` / ``train.reverse`` allow."""
    starts = range(n_frames - length + 1) if windows else range(1)
    return [(s, b) for s in starts for b in ((False, True) if reverse else (False,))]


@torch.no_grad()
def encode_clip(pipe, frames: np.ndarray) -> torch.Tensor:
    """Latents ``(T, C, h, w)`` of ``frames`` (T, H, W, 3) uint8, scaled, as the SVD pipeline computes them."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return pipe.vae.encode(x).latent_dist.mode() * pipe.vae.config.scaling_factor


@torch.no_grad()
def embed_frames(pipe, frames: np.ndarray, which: list[int]) -> dict[int, torch.Tensor]:
    """{frame: CLIP image embedding (1, D)} of the frames in ``which``, as the SVD pipeline computes it."""
    import PIL.Image

    return {int(t): pipe._encode_image(PIL.Image.fromarray(frames[t]), "cpu", 1, False)[0] for t in which}


def _cache_key(pipe, model: ModelSettings) -> str:
    from model.tiny import weights_fingerprint

    fp = weights_fingerprint(pipe.vae) + weights_fingerprint(pipe.image_encoder)
    return hashlib.sha1(f"{fp}|{model.height}x{model.width}".encode()).hexdigest()[:16]


def load_clips(wd: Workdir, cfg: Config, pipe, extractor_id: str | None) -> list[Clip]:
    """Every clip of (train.dataset, train.split) that has at least one usable entity."""
    m, tr = cfg.model, cfg.train
    labels = wd.read("labels", filter=(pc.field("dataset") == tr.dataset) & (pc.field("split") == tr.split))
    if labels.empty:
        raise ValueError(
            f"no labels for dataset '{tr.dataset}' split '{tr.split}' in {wd.url}; run `draganything labels` first "
            "(or set train.dataset / train.split)"
        )
    vectors = {}
    if extractor_id is not None:
        emb = wd.read("entity_embeddings", filter=(pc.field("dataset") == tr.dataset) & (pc.field("extractor") == extractor_id))
        vectors = {(v, int(e)): np.asarray(x, np.float32) for v, e, x in zip(emb["video_id"], emb["entity_id"], emb["vector"])}
    key = _cache_key(pipe, m)
    L, H, W = m.num_frames, m.height, m.width
    clips = []
    for video_id, group in labels.groupby("video_id", sort=True):
        first = group.iloc[0]
        frames, ids = load_cached_clip(wd, first["frames_path"])
        if len(frames) < L:
            continue  # labelled with fewer frames than the model makes
        frames, ids = resize_clip(frames, ids, (H, W))
        # named after the frames themselves: labelling again with other frames cannot reuse a stale encoding
        cache = f"cache/train/{key}/{tr.dataset}/{video_id}-{hashlib.sha1(frames.tobytes()).hexdigest()[:12]}.pt"
        sy, sx = H / int(first["height"]), W / int(first["width"])
        rows = []
        for r in group.itertuples():
            vec = vectors.get((video_id, int(r.entity_id)))
            if extractor_id is not None and vec is None:
                continue
            c = np.stack(r.centers).astype(np.float32)
            c = rescale(c, sx, sy)
            radii = np.asarray(r.radii, np.float32) * math.sqrt(sx * sy)
            rows.append((int(r.entity_id), c, radii, np.asarray(r.visible, bool) & (radii >= 1.0), vec))
        if not rows:
            continue
        usable = np.stack([x[3] for x in rows], 1)
        first_of = {v: int(Clip.window(*v, L)[0]) for v in clip_views(len(frames), L, tr.windows, tr.reverse)}
        views = [v for v, t in first_of.items() if usable[t].any()]
        if not views:
            continue
        starts = sorted({first_of[v] for v in views})
        latents, embeddings = _encoded(wd, cache, pipe, frames, starts)
        pixels = torch.from_numpy(frames[starts]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        clip = Clip(
            video_id=str(video_id),
            latents=latents,
            first_frames={t: (px, embeddings[t]) for t, px in zip(starts, pixels)},
            entity_ids=np.array([x[0] for x in rows]),
            centers=torch.from_numpy(np.stack([x[1] for x in rows], 1)),
            radii=torch.from_numpy(np.stack([x[2] for x in rows], 1)),
            usable=usable,
            vectors=None if extractor_id is None else torch.from_numpy(np.stack([x[4] for x in rows])),
            ids=ids,
            views=views,
        )
        clips.append(clip)
        if tr.hflip:
            mirrored = np.ascontiguousarray(frames[:, :, ::-1])
            m_latents, m_embeddings = _encoded(wd, cache.replace(".pt", "~hflip.pt"), pipe, mirrored, starts)
            centers = clip.centers.clone()
            centers[..., 0] = W - 1 - centers[..., 0]
            # The entity vectors are pooled over the mask, so they stand for the mirrored entity as well.
            flipped = {t: (px.flip(-1), m_embeddings[t]) for t, (px, _) in clip.first_frames.items()}
            clips.append(Clip(f"{video_id}~hflip", m_latents, flipped, clip.entity_ids, centers, clip.radii, usable,
                              clip.vectors, np.ascontiguousarray(ids[:, :, ::-1]), views))
    if not clips:
        raise ValueError(f"none of the {labels['video_id'].nunique()} labelled videos has an entity usable for training at {H}x{W}")
    return clips


def _encoded(wd: Workdir, cache: str, pipe, frames: np.ndarray, first: list[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """(latents of ``frames``, CLIP embeddings of the frames in ``first``), computed once and kept
    under ``cache``; only what the cache lacks (e.g. embeddings of new window starts) is computed."""
    enc = {}
    if wd.exists(cache):
        enc = torch.load(io.BytesIO(read_blob(wd, cache)), weights_only=True)
    embeddings = dict(enc.get("embeddings", {}))
    missing = [t for t in first if t not in embeddings]
    if enc and not missing:
        return enc["latents"], embeddings
    latents = enc["latents"] if enc else encode_clip(pipe, frames)
    embeddings.update(embed_frames(pipe, frames, missing))
    buf = io.BytesIO()
    torch.save({"latents": latents, "embeddings": embeddings}, buf)
    write_blob(wd, cache, buf.getvalue())
    return latents, embeddings


@dataclass
class Batch:
    latents: torch.Tensor  # (B, T, C, h, w)
    pixels: torch.Tensor  # (B, 3, H, W)
    embeddings: torch.Tensor  # (B, 1, D)
    conditions: dict[str, torch.Tensor]  # name -> (B, T, C, H, W)
    entities: list[EntityInputs] | None
    mask: torch.Tensor  # (B, T, 1, h, w) entity-pixel fraction at latent size
    video_ids: list[str]

    def to(self, device) -> "Batch":
        ents = None if self.entities is None else [EntityInputs(e.vectors.to(device), e.centers.to(device), e.radii.to(device)) for e in self.entities]
        return Batch(self.latents.to(device), self.pixels.to(device), self.embeddings.to(device),
                     {k: v.to(device) for k, v in self.conditions.items()}, ents, self.mask.to(device), self.video_ids)


def batch_for_step(clips: list[Clip], step: int, cfg: Config, rank: int = 0) -> Batch:
    """The batch of optimizer step ``step`` (and DDP rank): a pure function of (seed, step, rank)."""
    m, tr = cfg.model, cfg.train
    rng = np.random.default_rng([tr.seed, step, rank])
    picks = rng.integers(0, len(clips), size=tr.batch_size)
    conds, ents, masks, lats, pixels, embs = [], [], [], [], [], []
    for i in picks:
        c = clips[i]
        # (one view draws nothing, so a run without windows or reverse sees the batches it always did)
        frames = Clip.window(*(c.views[int(rng.integers(0, len(c.views)))] if len(c.views) > 1 else c.views[0]), m.num_frames)
        first = int(frames[0])
        usable = np.flatnonzero(c.usable[first])
        k = int(rng.integers(1, min(len(usable), tr.max_entities) + 1))
        chosen = np.sort(rng.choice(usable, size=k, replace=False))
        chosen = chosen[paint_order(c.radii[first, chosen]).numpy()]
        centers, radii = c.centers[frames][:, chosen], c.radii[first, chosen]
        vectors = None if c.vectors is None else c.vectors[chosen]
        conds.append(
            render_conditions(
                m.conditioning, centers, radii, m.height, m.width, vectors=vectors,
                sigma_ratio=m.gaussian_sigma_ratio, support_ratio=m.gaussian_support_ratio, dense_entity=m.encoder == "dense",
            )
        )
        if vectors is not None and m.encoder != "dense":
            ents.append(EntityInputs(vectors, centers, radii))
        masks.append(torch.from_numpy(np.isin(c.ids[frames], c.entity_ids[chosen])))
        lats.append(c.latents[frames])
        px, emb = c.first_frames[first]
        pixels.append(px)
        embs.append(emb)
    lat = torch.stack(lats)
    return Batch(
        latents=lat,
        pixels=torch.stack(pixels),
        embeddings=torch.stack(embs),
        conditions={k: torch.stack([c[k] for c in conds]) for k in conds[0]},
        entities=ents or None,
        mask=T.mask_to_latent(torch.stack(masks), lat.shape[-2], lat.shape[-1]),
        video_ids=[clips[i].video_id for i in picks],
    )


# --- the step ----------------------------------------------------------------------


def _conditioning(pipe, pixels: torch.Tensor, noise_aug: float, gen: torch.Generator) -> torch.Tensor:
    noisy = pixels + noise_aug * torch.randn(pixels.shape, generator=gen).to(pixels.device)
    return pipe.vae.encode(noisy.to(pipe.vae.dtype)).latent_dist.mode()


def controller_loss(pipe, controlnet, batch: Batch, cfg: Config, gen: torch.Generator, autocast=contextlib.nullcontext) -> torch.Tensor:
    """The masked EDM loss of one batch through the frozen UNet with the controller's residuals."""
    tr, g = cfg.train, cfg.generate
    edm = T.EDM(tr.p_mean, tr.p_std)
    B, device = batch.latents.shape[0], batch.latents.device
    sigma = edm.sample_sigmas(B, gen, device)
    noisy = T.add_noise(batch.latents, sigma, gen)
    _, _, c_in, c_noise = T.precondition(sigma)
    with torch.no_grad():
        image_latents = _conditioning(pipe, batch.pixels, g.noise_aug_strength, gen)
    ids = T.time_ids(g.fps, g.motion_bucket_id, g.noise_aug_strength, B, device)
    with autocast():
        pred = controlled_prediction(
            pipe.unet, controlnet, noisy * c_in.reshape(-1, 1, 1, 1, 1), image_latents, batch.embeddings, ids, c_noise,
            conditions=batch.conditions or None, entities=batch.entities, conditioning_scale=cfg.model.conditioning_scale,
            frame_chunk=cfg.model.frame_chunk,
        )
    denoised = T.denoise(pred.float(), noisy, sigma)
    return T.masked_mse(denoised, batch.latents, batch.mask if tr.loss_mask else None, T.loss_weight(sigma))


# --- checkpoints ---------------------------------------------------------------------


def run_id(cfg: Config, parent: str | None) -> str:
    """Deterministic: the same config trained from the same parent is the same run (so a re-run resumes it)."""
    return "run-" + hashlib.sha1(f"{cfg.digest()}|{parent or 'scratch'}".encode()).hexdigest()[:10]


def checkpoint_id(run: str, step: int) -> str:
    return f"{run}-s{step:06d}"


def save_checkpoint(wd: Workdir, cid: str, controlnet, state: dict, cfg: Config) -> str:
    """Write ``checkpoints/<id>/`` whole or not at all: a temp folder renamed into place."""
    rel = f"checkpoints/{cid}"

    def write(folder: Path) -> None:
        controlnet.save_pretrained(folder / "controlnet", safe_serialization=True)
        torch.save(state, folder / "state.pt")
        (folder / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))

    wd.write_dir_atomic(rel, write)  # a retried step never overwrites a good checkpoint
    return rel


def load_training_state(path: Path) -> dict:
    """``state.pt`` unpickled with ``weights_only=True``: tensors and containers, plus the numpy RNG state's types only."""
    allowed = [np.dtype, np.ndarray, np.dtypes.UInt32DType, np._core.multiarray._reconstruct]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint_state(wd: Workdir, row: dict) -> tuple[dict, Path]:
    """The training state of a ``checkpoints`` row; a clear error if it is missing or damaged."""
    if not row.get("path"):
        raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' has no weights (a reference generator); resume from a trained one")
    folder = Path(wd.local_path(row["path"]))
    state_file, weights = folder / "state.pt", folder / "controlnet" / "diffusion_pytorch_model.safetensors"
    for f in (state_file, weights):
        if not f.is_file():
            raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' is incomplete: {f} is missing; resume from another checkpoint")
    try:
        state = load_training_state(state_file)
        from safetensors import safe_open

        with safe_open(str(weights), "pt"):
            pass
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # garbage, not a pickle of foreign objects
            raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' is damaged (UnpicklingError reading {folder}); resume from another checkpoint") from None
        raise CheckpointError(
            f"checkpoint '{row['checkpoint_id']}': {state_file} holds objects other than a training state's (tensors, numbers, "
            "the RNG state), so it was not unpickled; resume from a checkpoint this pipeline wrote"
        ) from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' is damaged ({type(err).__name__} reading {folder}); resume from another checkpoint") from None
    return state, folder


def checkpoint_row(cid: str, parent: str | None, cfg: Config, step: int, path: str) -> dict:
    return dict(
        checkpoint_id=cid, parent=parent, config=json.dumps(cfg.model_dump(mode="json")), config_hash=cfg.digest(),
        step=int(step), path=path, created_at=now_utc(),
    )


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


# --- the loop ------------------------------------------------------------------------


@dataclass
class TrainResult:
    run: str
    checkpoints: list[str]
    first_step: int
    last_step: int
    losses: list[float]


def train_loop(wd: Workdir, cfg: Config, pipe, controlnet, clips: list[Clip], start_step: int = 0, parent: str | None = None,
               state: dict | None = None, steps: int | None = None, progress: bool = True, run: str | None = None) -> TrainResult:
    """Optimise the controller for ``steps`` steps from ``start_step``; checkpoint every N steps."""
    tr = cfg.train
    steps = tr.steps if steps is None else steps
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist else 0
    model = controlnet

    device = torch.device("cuda", torch.cuda.current_device()) if tr.use_gpu and torch.cuda.is_available() else torch.device("cpu")
    for part in (pipe.unet, pipe.vae, pipe.image_encoder):
        part.to(device).eval().requires_grad_(False)
    controlnet.to(device)
    controlnet.train().requires_grad_(True)
    if tr.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
        pipe.unet.enable_gradient_checkpointing()
    if dist:
        model = torch.nn.parallel.DistributedDataParallel(controlnet, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in controlnet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / tr.warmup_steps) if tr.warmup_steps else 1.0)
    ema = [p.detach().clone() for p in params] if tr.ema_decay else None
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema = [e.clone() for e in state["ema"]]
    use_amp = tr.mixed_precision != "no" and torch.cuda.is_available()
    autocast = (lambda: torch.autocast("cuda", dtype=getattr(torch, "bfloat16" if tr.mixed_precision == "bf16" else "float16"))) if use_amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda") if use_amp and tr.mixed_precision == "fp16" else None

    run = run or run_id(cfg, parent)
    made, losses, log_rows = [], [], []
    prev = parent
    end = start_step + steps
    bar = tqdm(total=steps, desc=f"train {run}", unit="step", disable=not progress or rank != 0, mininterval=10)
    for step in range(start_step, end):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(tr.grad_accum):
            batch = batch_for_step(clips, step * tr.grad_accum + micro, cfg, rank).to(device)
            gen = torch.Generator().manual_seed(hash((tr.seed, step, micro, rank)) & 0x7FFFFFFF)
            loss = controller_loss(pipe, model, batch, cfg, gen, autocast) / tr.grad_accum
            (scaler.scale(loss) if scaler else loss).backward()
            total += float(loss.detach())
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, tr.max_grad_norm)
        (scaler.step(opt), scaler.update()) if scaler else opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema, params):
                    e.lerp_(p.detach(), 1 - tr.ema_decay)
        losses.append(total)
        done = step + 1
        seconds = time.perf_counter() - t0
        upcoming = checkpoint_id(run, min(end, (done + tr.checkpoint_every - 1) // tr.checkpoint_every * tr.checkpoint_every))
        if done % tr.log_every == 0 or done == end:
            log_rows.append(dict(checkpoint_id=upcoming, step=done, loss=total, lr=sched.get_last_lr()[0], seconds=seconds,
                                 samples_per_s=tr.batch_size * tr.grad_accum / seconds))
        bar.set_postfix(loss=f"{total:.4f}", refresh=False)
        bar.update(1)
        if rank == 0 and (done % tr.checkpoint_every == 0 or done == end):
            cid = checkpoint_id(run, done)
            state_out = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "ema": ema, "step": done,
                         "rng": _rng_state(), "run": run}
            weights = controlnet
            if ema is not None:  # generation uses the EMA weights; the raw ones live in the optimizer's state
                weights = _with_params(controlnet, ema)
            path = save_checkpoint(wd, cid, weights, state_out, cfg)
            wd.append("train_log", log_rows)
            wd.append("checkpoints", [checkpoint_row(cid, prev, cfg, done, path)])
            log_rows, prev = [], cid
            made.append(cid)
    bar.close()
    return TrainResult(run, made, start_step, end, losses)


def _with_params(module, values: list[torch.Tensor]):
    import copy

    clone = copy.deepcopy(module)
    with torch.no_grad():
        for p, v in zip([p for p in clone.parameters() if p.requires_grad], values):
            p.copy_(v)
    return clone


# --- the tiny base ---------------------------------------------------------------------


def fit_tiny_base(wd: Workdir, cfg: Config, progress: bool = True) -> str:
    """Fit the embedded tiny VAE, then the base UNet, on the training clips; saved as an SVD folder.

    Returns the folder (relative to the workdir), reused when it exists. Refused for a
    real base model: the point is only to give the CPU demo a base worth controlling.
    """
    from diffusers import StableVideoDiffusionPipeline

    from model.tiny import build_tiny_svd, tiny_sizes

    m, fb = cfg.model, cfg.train.fit_base
    if m.base_model_path:
        raise ValueError("train.fit_base is for the embedded tiny model; set it off when model.base_model_path is a real SVD")
    split = fb.split or cfg.train.split
    digest = hashlib.sha1(json.dumps([m.tiny.model_dump(mode="json"), m.num_frames, m.height, m.width, fb.model_dump(mode="json"),
                                      cfg.train.dataset, split], sort_keys=True).encode()).hexdigest()[:10]
    rel = f"base/tiny-{digest}"
    if wd.exists(rel, "model_index.json"):
        return rel
    torch.manual_seed(m.tiny.seed)
    parts = build_tiny_svd(tiny_sizes(m))
    pipe = StableVideoDiffusionPipeline(**parts)
    labels = wd.read("labels", columns=["dataset", "split", "video_id", "frames_path"],
                     filter=(pc.field("dataset") == cfg.train.dataset) & (pc.field("split") == split))
    videos = []
    for path in sorted(set(labels["frames_path"])):
        frames, ids = load_cached_clip(wd, path)
        if len(frames) >= m.num_frames:
            f, _ = resize_clip(frames[: m.num_frames], ids[: m.num_frames], (m.height, m.width))
            videos.append(torch.from_numpy(f).permute(0, 3, 1, 2).float() / 127.5 - 1.0)
    if not videos:
        raise ValueError(f"no labelled clip of split '{split}' to fit the tiny base model on; run `draganything labels --split {split}` first")
    clips = torch.stack(videos)  # (V, T, 3, H, W)
    rng = np.random.default_rng(cfg.train.seed)
    gen = torch.Generator().manual_seed(cfg.train.seed)

    vae = pipe.vae.train().requires_grad_(True)
    restore = _framewise_decoder(vae)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=fb.vae_lr)
    T_, n_frames = clips.shape[1], 4 * fb.batch_size
    for _ in tqdm(range(fb.vae_steps), desc="fit tiny VAE", disable=not progress, mininterval=10):
        # Distinct frames from many clips (frames of one clip are near copies of each other).
        x = clips[rng.integers(0, len(clips), n_frames), rng.integers(0, T_, n_frames)]
        x = _random_crops(x, fb.vae_crop, rng)
        post = vae.encode(x).latent_dist
        # The posterior mean, not a sample: everything downstream encodes with .mode(), and at
        # initialisation the sampling noise (std ~1) drowns the signal, so the decoder learns to
        # ignore the latent. The small KL term only keeps the latents' scale in check.
        rec = vae.decode(post.mean, num_frames=1).sample
        loss = torch.nn.functional.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        if fb.vae_preview:
            patch = x.shape[-1] // post.mean.shape[-1]
            loss = loss + fb.vae_preview * torch.nn.functional.mse_loss(post.mean[:, :3], torch.nn.functional.avg_pool2d(x, patch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        restore()
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        # Unit-variance latents, as SVD's preconditioning assumes (sigma_data = 1).
        std = torch.cat([vae.encode(v).latent_dist.mode() for v in clips]).std()
        vae.register_to_config(scaling_factor=float(1.0 / std))
        latents = torch.stack([vae.encode(v).latent_dist.mode() * vae.config.scaling_factor for v in clips])
        embeds = torch.stack([pipe._encode_image(_pil(v[0]), "cpu", 1, False)[0] for v in clips])
    unet = pipe.unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=fb.lr)
    edm = T.EDM(cfg.train.p_mean, cfg.train.p_std)
    g = cfg.generate
    for _ in tqdm(range(fb.unet_steps), desc="fit tiny base UNet", disable=not progress, mininterval=10):
        idx = rng.integers(0, len(clips), fb.batch_size)
        x0 = latents[idx]
        sigma = edm.sample_sigmas(len(idx), gen)
        noisy = T.add_noise(x0, sigma, gen)
        _, _, c_in, c_noise = T.precondition(sigma)
        with torch.no_grad():
            cond = _conditioning(pipe, clips[idx, 0], g.noise_aug_strength, gen)
        emb = embeds[idx]
        drop = torch.from_numpy(rng.random(len(idx)) < fb.cond_dropout)
        cond = torch.where(drop[:, None, None, None], torch.zeros_like(cond), cond)
        emb = torch.where(drop[:, None, None], torch.zeros_like(emb), emb)
        sample = torch.cat([noisy * c_in.reshape(-1, 1, 1, 1, 1), cond[:, None].expand(-1, x0.shape[1], -1, -1, -1)], 2)
        pred = unet_forward_with_control(unet, sample, c_noise, emb, T.time_ids(g.fps, g.motion_bucket_id, g.noise_aug_strength, len(idx)))
        loss = T.masked_mse(T.denoise(pred, noisy, sigma), x0, None, T.loss_weight(sigma))
        opt.zero_grad()
        loss.backward()
        opt.step()
    unet.eval().requires_grad_(False)
    wd.write_dir_atomic(rel, lambda folder: pipe.save_pretrained(folder, safe_serialization=True))
    return rel


def _random_crops(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """One random ``size`` x ``size`` window of each image ``(N, 3, H, W)`` (the VAE is convolutional,
    so it learns from windows what it then does on whole frames, at a fraction of the cost)."""
    H, W = x.shape[-2:]
    if size >= H and size >= W:
        return x
    h, w = min(size, H), min(size, W)
    ys, xs = rng.integers(0, H - h + 1, len(x)), rng.integers(0, W - w + 1, len(x))
    return torch.stack([img[:, y : y + h, x0 : x0 + w] for img, y, x0 in zip(x, ys, xs)])


def _framewise_decoder(vae) -> "callable":
    """Switch the temporal decoder's time mixing off, so frames decode independently.

    Fitted in a few hundred CPU steps on single frames, the tiny VAE cannot also learn
    its temporal layers; with every ``AlphaBlender`` fully on its spatial input and the
    final time convolution reduced to its centre tap, decoding T frames is decoding
    each frame alone. Returns a function that re-applies this after optimizer steps.
    """
    from diffusers.models.resnet import AlphaBlender

    for m in vae.modules():
        if isinstance(m, AlphaBlender) and hasattr(m, "mix_factor"):
            m.mix_factor.data.fill_(30.0)  # sigmoid(30) = 1: spatial path only
            m.mix_factor.requires_grad_(False)
    conv = vae.decoder.time_conv_out
    centre = conv.kernel_size[0] // 2

    def restore() -> None:
        with torch.no_grad():
            w = conv.weight
            keep = w[:, :, centre].clone()
            w.zero_()
            w[:, :, centre] = keep

    restore()
    return restore


def _pil(x: torch.Tensor):
    import PIL.Image

    return PIL.Image.fromarray(((x.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).round().astype(np.uint8))


# --- the stage ------------------------------------------------------------------------


def run_key(cfg: Config) -> str:
    """The config without ``train.steps`` (how long, not what): part of the run id."""
    payload = cfg.model_dump(mode="json", exclude={"profile"})
    payload["train"].pop("steps", None)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def resolve_resume(wd: Workdir, resume: str) -> dict:
    table = wd.read("checkpoints")
    trained = table[table["path"].notna() & ~table["checkpoint_id"].str.contains("~", regex=False)].sort_values(["created_at", "step"])
    if resume == "latest":
        if trained.empty:
            raise CheckpointError(f"--resume latest: no trained checkpoint in {wd.url}; train from scratch first")
        return trained.iloc[-1].to_dict()
    row = table[table["checkpoint_id"] == resume]
    if row.empty:
        raise CheckpointError(f"checkpoint '{resume}' is not in {wd.url}/tables/checkpoints; `draganything status -w {wd.url}` lists them")
    return row.iloc[0].to_dict()


def _ensure_embeddings(wd: Workdir, cfg: Config, extractor_id: str) -> int:
    from tasks.embeddings import embed_videos

    tr = cfg.train
    labels = wd.read("labels", columns=["dataset", "split", "video_id", "entity_id", "frames_path"],
                     filter=(pc.field("dataset") == tr.dataset) & (pc.field("split") == tr.split))
    have = {(d, v, e) for d, v, e, x in wd.keys("entity_embeddings") if x == extractor_id}
    todo = [r for r in labels.to_dict("records") if (r["dataset"], r["video_id"], r["entity_id"]) not in have]
    return wd.append("entity_embeddings", embed_videos(wd.url, todo, cfg.model)) if todo else 0


def run_training(workdir: str, cfg: Config, resume: str | None = None, steps: int | None = None, progress: bool = True) -> dict:
    """Train (or continue) one run; returns what was done. Re-running a finished run does nothing."""
    from model.controlnet import DragAnythingControlNetModel
    from model.entity_features import build_extractor
    from model.pipeline import build_pipeline

    wd = Workdir(workdir)
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist else 0
    steps = cfg.train.steps if steps is None else steps
    if cfg.train.fit_base.enabled:
        base = fit_tiny_base(wd, cfg, progress) if rank == 0 else None
        if dist:
            holder = [base]
            torch.distributed.broadcast_object_list(holder, src=0)
            base = holder[0]
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"base_model_path": wd.local_path(base)})})

    origin = resolve_resume(wd, resume) if resume else None
    run = "run-" + hashlib.sha1(f"{run_key(cfg)}|{origin['checkpoint_id'] if origin else 'scratch'}".encode()).hexdigest()[:10]
    target = (int(origin["step"]) if origin else 0) + steps
    mine = wd.read("checkpoints")
    mine = mine[mine["checkpoint_id"].str.startswith(run + "-")].sort_values("step")
    start_row = mine.iloc[-1].to_dict() if not mine.empty else origin
    start = int(start_row["step"]) if start_row else 0
    if start >= target and not mine.empty:
        return {"run": run, "trained_steps": 0, "checkpoints": [], "latest": start_row["checkpoint_id"], "step": start}

    pipe = build_pipeline(cfg.model)
    state = None
    if start_row:
        state, folder = load_checkpoint_state(wd, start_row)
        pipe.controlnet = DragAnythingControlNetModel.from_pretrained(folder / "controlnet", local_files_only=True)
    extractor = None
    if "entity" in condition_channels(cfg.model.conditioning, cfg.model.entity_channels):
        extractor = build_extractor(cfg.model, base_parts=dict(unet=pipe.unet, vae=pipe.vae)).extractor_id
        if rank == 0:
            _ensure_embeddings(wd, cfg, extractor)
    if dist:
        torch.distributed.barrier()
    clips = load_clips(wd, cfg, pipe, extractor)

    made = []
    if start_row is None and rank == 0:  # the untrained controller: the floor every trained one must beat
        cid = checkpoint_id(run, 0)
        path = save_checkpoint(wd, cid, pipe.controlnet, {"optimizer": None, "scheduler": None, "ema": None, "step": 0, "run": run}, cfg)
        wd.append("checkpoints", [checkpoint_row(cid, None, cfg, 0, path)])
        made.append(cid)
    if state is not None and state.get("optimizer") is None:
        state = None  # a step-0 checkpoint has no optimizer yet
    parent = start_row["checkpoint_id"] if start_row else checkpoint_id(run, 0)
    result = train_loop(wd, cfg, pipe, pipe.controlnet, clips, start_step=start, parent=parent, state=state,
                        steps=target - start, progress=progress, run=run)
    made += result.checkpoints
    return {"run": run, "trained_steps": target - start, "checkpoints": made, "latest": made[-1] if made else None,
            "step": target, "loss_first": result.losses[0] if result.losses else None,
            "loss_last": float(np.mean(result.losses[-10:])) if result.losses else None}
