"""The training stage: label tables -> controller checkpoints (+ ``checkpoints``, ``train_log``).

- The preprocess stage (``tasks.preprocess``) encodes every clip once, on the accelerators,
  into ``cache/train/``; ``tasks.train_data`` turns the caches into clips and batches (a
  pure function of (seed, step, rank), so a resumed run sees the batches an uninterrupted one would).
- ``train_loop``: AdamW on the controller only, through the frozen base UNet (the only base
  model a training rank loads); checkpoints every N steps (``tasks.checkpoint_files``); one
  function for one process and for each Ray Train (DDP) worker.
- ``fit_tiny_base``: for the CPU demo, fit the embedded tiny VAE and base UNet first.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from tqdm import tqdm

from core.config import Config
from core.media import load_cached_clip, resize_clip
from core.tables import Workdir, now_utc
from model import training as T
from model.unet_control import controlled_prediction, unet_forward_with_control
from tasks.checkpoint_files import (  # noqa: F401 - re-exported: the stage's checkpoint API
    CheckpointError,
    checkpoint_sizes,
    load_checkpoint_state,
    prune_training_state,
    raw_weights_folder,
    save_checkpoint,
)
from tasks.train_data import Batch, Clip, batch_for_step, conditioning_latents, load_clips  # noqa: F401

STAGE = "train"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# --- the step ----------------------------------------------------------------------


def controller_loss(pipe, controlnet, batch: Batch, cfg: Config, gen: torch.Generator, autocast=contextlib.nullcontext) -> torch.Tensor:
    """The masked EDM loss of one batch through the frozen UNet (``pipe.unet``) with the controller's residuals."""
    tr, g = cfg.train, cfg.generate
    edm = T.EDM(tr.p_mean, tr.p_std)
    B, device = batch.latents.shape[0], batch.latents.device
    sigma = edm.sample_sigmas(B, gen, device)
    noisy = T.add_noise(batch.latents, sigma, gen)
    _, _, c_in, c_noise = T.precondition(sigma)
    ids = T.time_ids(cfg.model.fps, g.motion_bucket_id, g.noise_aug_strength, B, device)
    with autocast():
        pred = controlled_prediction(
            pipe.unet, controlnet, noisy * c_in.reshape(-1, 1, 1, 1, 1), batch.image_latents, batch.embeddings, ids, c_noise,
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


def checkpoint_row(cid: str, parent: str | None, cfg: Config, step: int, path: str) -> dict:
    return dict(
        checkpoint_id=cid, parent=parent, config=json.dumps(cfg.model_dump(mode="json")), config_hash=cfg.digest(),
        step=int(step), path=path, created_at=now_utc(),
    )


# --- the loop ------------------------------------------------------------------------


@dataclass
class TrainResult:
    run: str
    checkpoints: list[str]
    first_step: int
    last_step: int
    losses: list[float]


def train_loop(wd: Workdir, cfg: Config, pipe, controlnet, clips: list[Clip], start_step: int = 0, parent: str | None = None,
               state: dict | None = None, steps: int | None = None, progress: bool = True, run: str | None = None,
               ema_weights: list[torch.Tensor] | None = None) -> TrainResult:
    """Optimise the controller for ``steps`` steps from ``start_step``; checkpoint every N steps.

    ``pipe``: anything with the frozen base ``unet``; ``controlnet``: the trained (raw) weights;
    ``ema_weights``: the EMA to continue (a resumed run's ``controlnet/``), else a copy of the raw weights.
    """
    tr = cfg.train
    steps = tr.steps if steps is None else steps
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist else 0
    model = controlnet

    device = torch.device("cuda", torch.cuda.current_device()) if tr.use_gpu and torch.cuda.is_available() else torch.device("cpu")
    pipe.unet.to(device).eval().requires_grad_(False)  # the only base model training needs: the clips are encoded
    controlnet.to(device, DTYPES[tr.controller_dtype])
    controlnet.train().requires_grad_(True)
    if tr.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
        pipe.unet.enable_gradient_checkpointing()
    if dist:
        model = torch.nn.parallel.DistributedDataParallel(controlnet, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in controlnet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / tr.warmup_steps) if tr.warmup_steps else 1.0)
    ema = None
    if tr.ema_decay:  # kept in fp32 whatever the controller's dtype (a decay of 0.9999 is below bf16's resolution)
        ema = [e.detach().to(device, torch.float32).clone() for e in (ema_weights or params)]
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:  # a checkpoint written before controlnet_raw/ existed
            ema = [e.to(device, torch.float32).clone() for e in state["ema"]]
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
                    e.lerp_(p.detach().float(), 1 - tr.ema_decay)
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
            state_out = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": done,
                         "rng": {"torch": torch.get_rng_state()}, "run": run}
            # generation uses the EMA weights; the raw ones are kept beside them, and resume continues from those
            weights, raw = (controlnet, None) if ema is None else (_with_params(controlnet, ema), controlnet)
            path = save_checkpoint(wd, cid, weights, state_out, cfg, raw=raw)
            wd.append("train_log", log_rows)
            wd.append("checkpoints", [checkpoint_row(cid, prev, cfg, done, path)])
            _prune(wd, run, tr.keep_last)
            log_rows, prev = [], cid
            made.append(cid)
    bar.close()
    return TrainResult(run, made, start_step, end, losses)


def _prune(wd: Workdir, run: str, keep_last: int) -> None:
    """Only the run's last ``keep_last`` checkpoints keep their training state (``tasks.checkpoint_files``)."""
    table = wd.read("checkpoints", columns=["checkpoint_id", "step", "path"])
    mine = table[table["checkpoint_id"].str.startswith(run + "-") & table["path"].notna()].sort_values("step")
    prune_training_state(wd, list(dict.fromkeys(mine["path"])), keep_last)


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
            cond = conditioning_latents(pipe, clips[idx, 0], g.noise_aug_strength, gen)
        emb = embeds[idx]
        drop = torch.from_numpy(rng.random(len(idx)) < fb.cond_dropout)
        cond = torch.where(drop[:, None, None, None], torch.zeros_like(cond), cond)
        emb = torch.where(drop[:, None, None], torch.zeros_like(emb), emb)
        sample = torch.cat([noisy * c_in.reshape(-1, 1, 1, 1, 1), cond[:, None].expand(-1, x0.shape[1], -1, -1, -1)], 2)
        pred = unet_forward_with_control(unet, sample, c_noise, emb, T.time_ids(m.fps, g.motion_bucket_id, g.noise_aug_strength, len(idx)))
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


def preprocess_in_process(workdir: str, cfg: Config) -> dict:
    """The preprocess stage in this process (one shard of every clip lacking a cache); its encoders are freed after."""
    from tasks.preprocess import encode_clips, missing

    from tasks.preprocess import cache_key

    todo = missing(Workdir(workdir), cfg)
    out = encode_clips(workdir, cfg, todo) if todo else {"encoded": [], "embedded": 0, "key": cache_key(cfg)}
    gc.collect()
    return out


def with_base(cfg: Config, wd: Workdir, progress: bool, dist: bool, rank: int) -> Config:
    """The config with the tiny base fitted (``train.fit_base``, rank 0) and its folder as the base model."""
    if not cfg.train.fit_base.enabled:
        return cfg
    base = fit_tiny_base(wd, cfg, progress) if rank == 0 else None
    if dist:
        holder = [base]
        torch.distributed.broadcast_object_list(holder, src=0)
        base = holder[0]
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"base_model_path": wd.local_path(base)})})


@dataclass
class _Base:
    unet: torch.nn.Module


def run_training(workdir: str, cfg: Config, resume: str | None = None, steps: int | None = None, progress: bool = True,
                 cache_key: str | None = None) -> dict:
    """Train (or continue) one run; returns what was done. Re-running a finished run does nothing.

    ``cache_key``: the preprocess stage ran before (``flows/train.py``) and reported it; the run
    reads the caches and no file of the base but the UNet's. Without it, in one process, the
    missing caches are encoded here first; under DDP a rank that finds a cache missing stops
    with a clear error.
    """
    from model.controlnet import DragAnythingControlNetModel
    from model.pipeline import build_controlnet
    from model.tiny import load_base_unet, tiny_sizes

    wd = Workdir(workdir)
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist else 0
    steps = cfg.train.steps if steps is None else steps
    cfg = with_base(cfg, wd, progress, dist, rank)

    origin = resolve_resume(wd, resume) if resume else None
    run = "run-" + hashlib.sha1(f"{run_key(cfg)}|{origin['checkpoint_id'] if origin else 'scratch'}".encode()).hexdigest()[:10]
    target = (int(origin["step"]) if origin else 0) + steps
    mine = wd.read("checkpoints")
    mine = mine[mine["checkpoint_id"].str.startswith(run + "-")].sort_values("step")
    start_row = mine.iloc[-1].to_dict() if not mine.empty else origin
    start = int(start_row["step"]) if start_row else 0
    if start >= target and not mine.empty:
        return {"run": run, "trained_steps": 0, "checkpoints": [], "latest": start_row["checkpoint_id"], "step": start}

    prepared = {"encoded": [], "key": cache_key} if dist or cache_key else preprocess_in_process(workdir, cfg)
    clips = load_clips(wd, cfg, prepared["key"])
    m = cfg.model
    unet, factor = load_base_unet(m.base_model_path, tiny_sizes(m), torch_dtype=DTYPES[m.dtype])
    base = _Base(unet)
    state, ema_weights = None, None
    if start_row:
        state, folder = load_checkpoint_state(wd, start_row)
        controlnet = DragAnythingControlNetModel.from_pretrained(raw_weights_folder(folder), local_files_only=True)
        if cfg.train.ema_decay and (folder / "controlnet_raw").is_dir():
            ema = DragAnythingControlNetModel.from_pretrained(folder / "controlnet", local_files_only=True)
            ema_weights = [p.detach() for p in ema.parameters()]
    else:
        controlnet = build_controlnet(m, unet, factor)

    made = []
    if start_row is None and rank == 0:  # the untrained controller: the floor every trained one must beat
        cid = checkpoint_id(run, 0)
        path = save_checkpoint(wd, cid, controlnet, {"optimizer": None, "scheduler": None, "step": 0, "run": run}, cfg)
        wd.append("checkpoints", [checkpoint_row(cid, None, cfg, 0, path)])
        made.append(cid)
    if state is not None and state.get("optimizer") is None:
        state = None  # a step-0 checkpoint has no optimizer yet
    parent = start_row["checkpoint_id"] if start_row else checkpoint_id(run, 0)
    result = train_loop(wd, cfg, base, controlnet, clips, start_step=start, parent=parent, state=state,
                        steps=target - start, progress=progress, run=run, ema_weights=ema_weights)
    made += result.checkpoints
    return {"run": run, "trained_steps": target - start, "checkpoints": made, "latest": made[-1] if made else None,
            "step": target, "encoded": len(prepared["encoded"]), "loss_first": result.losses[0] if result.losses else None,
            "loss_last": float(np.mean(result.losses[-10:])) if result.losses else None}
