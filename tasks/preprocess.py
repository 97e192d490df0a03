"""The preprocess stage: every training clip's encodings, computed once, on the accelerators, before training.

For each labelled clip of (``train.dataset``, ``train.split``) at the model's size (and its
mirror image with ``train.hflip``) one cache file holds

- ``latents``: the VAE latents of every labelled frame (scaled by the VAE's factor);
- ``embeddings``: the CLIP image embedding of each frame a training window may start on;
- ``cond``: for each such frame, ``train.cond_noise_draws`` noise-augmented image latents
  (what SVD conditions on: ``encode(frame + noise_aug_strength * eps)``, unscaled); a step
  draws one, so the training ranks never run the VAE;
- ``mask_counts``: per frame and entity, how many of the entity's pixels fall in each latent
  cell (uint8): the loss mask at latent resolution, not the full-resolution panoptic ids;
- ``vectors``: the entity vectors (also appended to ``entity_embeddings`` where missing).

Only plain tensors, lists, dicts, ints and strings, so ``torch.load(weights_only=True)`` reads it.
A file's name derives from what it is computed from (the base's weight files, the model's
size and entity settings, the frames-cache file, the entities and window starts), so an
existing file is complete and only missing files are computed. ``encode_clips`` is the unit
of work (a Ray task per shard with a GPU in ``flows/train.py``); training reads the files.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from core.config import Config
from core.geometry import rescale
from core.media import load_cached_clip, read_blob, resize_clip, write_blob
from core.paths import file_name
from core.tables import Workdir
from core.windows import window
from model.maps import reads_entity_vectors
from model.tiny import vae_factor


def clip_views(n_frames: int, length: int, windows: bool, reverse: bool) -> list[tuple[int, bool]]:
    """Every (start, backwards) window of ``length`` frames that ``train.windows`` / ``train.reverse`` allow."""
    starts = range(n_frames - length + 1) if windows else range(1)
    return [(s, b) for s in starts for b in ((False, True) if reverse else (False,))]


@dataclass
class ClipSpec:
    """What training needs of one labelled video, from the labels table alone (no frames, no model)."""

    video_id: str
    frames_path: str
    n_frames: int
    entity_ids: np.ndarray  # (N,)
    centers: np.ndarray  # (T, N, 2) model pixels
    radii: np.ndarray  # (T, N) model pixels
    usable: np.ndarray  # (T, N) visible and large enough to condition on, when that frame comes first
    views: list[tuple[int, bool]]
    starts: list[int]  # frames some view starts on


def clip_specs(wd: Workdir, cfg: Config) -> tuple[list[ClipSpec], int]:
    """The specs of every clip of (train.dataset, train.split) with a usable entity, and how many videos were labelled."""
    m, tr = cfg.model, cfg.train
    labels = wd.read("labels", filter=(pc.field("dataset") == tr.dataset) & (pc.field("split") == tr.split))
    if labels.empty:
        raise ValueError(
            f"no labels for dataset '{tr.dataset}' split '{tr.split}' in {wd.url}; run `draganything labels` first "
            "(or set train.dataset / train.split)"
        )
    L, H, W = m.num_frames, m.height, m.width
    specs = []
    for video_id, group in labels.groupby("video_id", sort=True):
        first = group.iloc[0]
        n_frames = len(first["centers"])
        if n_frames < L:
            continue  # labelled with fewer frames than the model makes
        sy, sx = H / int(first["height"]), W / int(first["width"])
        ids, centers, radii = [], [], []
        for r in group.itertuples():
            centers.append(rescale(np.stack(r.centers).astype(np.float32), sx, sy))
            radii.append(np.asarray(r.radii, np.float32) * math.sqrt(sx * sy))
            ids.append(int(r.entity_id))
        visible = np.stack([np.asarray(v, bool) for v in group["visible"]], 1)
        radii_tn = np.stack(radii, 1)
        usable = visible & (radii_tn >= 1.0)
        first_of = {v: int(window(*v, L)[0]) for v in clip_views(n_frames, L, tr.windows, tr.reverse)}
        views = [v for v, t in first_of.items() if usable[t].any()]
        if views:
            specs.append(ClipSpec(str(video_id), str(first["frames_path"]), n_frames, np.array(ids), np.stack(centers, 1),
                                  radii_tn, usable, views, sorted({first_of[v] for v in views})))
    return specs, int(labels["video_id"].nunique())


# --- names -------------------------------------------------------------------------------


def files_fingerprint(folder: str | Path, parts: tuple[str, ...]) -> str:
    """A short hash of a diffusers folder's parts without loading them: each config and, of each weight
    file, its size, its header and a strided sample of its bytes (retraining or swapping weights changes it)."""
    h = hashlib.sha256()
    root = Path(folder)
    for part in parts:
        for f in sorted((root / part).glob("*")):
            if f.suffix == ".json":
                h.update(f.read_bytes())
            elif f.suffix in (".safetensors", ".bin"):
                size = f.stat().st_size
                h.update(f"{f.name}:{size}".encode())
                with open(f, "rb") as fh:
                    h.update(fh.read(1 << 16))
                    for k in range(1, 17):
                        fh.seek(size * k // 17)
                        h.update(fh.read(4096))
    return h.hexdigest()[:12]


def cache_key(cfg: Config) -> str:
    """Everything a cache file's contents depend on, besides the clip itself."""
    m, tr = cfg.model, cfg.train
    if m.base_model_path or m.tiny.pretrained:  # a folder (a real SVD, or the tiny profile's shipped base): its files
        from model.tiny import SHIPPED_BASE

        base = files_fingerprint(m.base_model_path or SHIPPED_BASE, ("vae", "image_encoder", "unet"))
    else:
        base = m.tiny.model_dump(mode="json")  # random weights: the sizes and seed say it all
    sd15 = files_fingerprint(m.entity_backbone_path, ("unet", "vae", "text_encoder")) if m.entity_backbone == "sd15-unet" and m.entity_backbone_path else None
    # the conditioning matters only through whether entity vectors are in the files: the conditionings
    # that read them (entity, entity+gaussian ...) share one cache, those that do not share another
    vectors = reads_entity_vectors(m.conditioning)
    payload = dict(base=base, sd15=sd15, hw=[m.height, m.width], frames=m.num_frames, entity=[vectors, m.entity_backbone, m.entity_timestep,
                   m.entity_layer, m.entity_channels, m.entity_ensemble], noise_aug=cfg.generate.noise_aug_strength,
                   draws=tr.cond_noise_draws, seed=tr.seed, dtype=m.dtype, version=3)
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_file(wd: Workdir, cfg: Config, key: str, spec: ClipSpec, mirrored: bool) -> str:
    """``cache/train/<key>/<dataset>/<video>-<what it is computed from>[~hflip].pt``."""
    info = wd.fs.info(wd.path(spec.frames_path))
    stamp = f"{spec.frames_path}|{info.get('size')}|{info.get('mtime') or info.get('LastModified') or info.get('created')}"
    what = hashlib.sha1(f"{stamp}|{spec.entity_ids.tolist()}|{spec.starts}".encode()).hexdigest()[:12]
    return f"cache/train/{key}/{cfg.train.dataset}/{file_name(f'{spec.video_id}-{what}' + ('~hflip' if mirrored else ''), '.pt')}"


def missing(wd: Workdir, cfg: Config, specs: list[ClipSpec] | None = None, key: str | None = None) -> list[str]:
    """Video ids whose cache files (plain, and mirrored with ``train.hflip``) are not all there."""
    specs = specs if specs is not None else clip_specs(wd, cfg)[0]
    key = key or cache_key(cfg)
    todo = []
    for s in specs:
        if not all(wd.exists(cache_file(wd, cfg, key, s, mir)) for mir in (False, True)[: 1 + cfg.train.hflip]):
            todo.append(s.video_id)
    return todo


def read_cache(wd: Workdir, relpath: str) -> dict:
    return torch.load(io.BytesIO(read_blob(wd, relpath)), map_location="cpu", weights_only=True)


# --- the work -------------------------------------------------------------------------


def encode_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


class Encoders:
    """The VAE, the CLIP image encoder and the entity extractor, on one device, loaded once per task."""

    def __init__(self, cfg: Config, device: torch.device):
        from diffusers import StableVideoDiffusionPipeline

        from model.entity_features import build_extractor
        from model.tiny import DTYPES, base_components, tiny_sizes

        m = cfg.model
        parts = base_components(m.base_model_path, tiny_sizes(m), torch_dtype=DTYPES[m.dtype] if m.base_model_path else None)
        if not m.base_model_path and m.dtype != "fp32":
            for name in ("unet", "vae", "image_encoder"):
                parts[name].to(DTYPES[m.dtype])
        self.pipe = StableVideoDiffusionPipeline(**parts).to(device)
        self.device = device
        self.extractor = None
        if reads_entity_vectors(m.conditioning):
            self.extractor = build_extractor(m, base_parts=dict(unet=self.pipe.unet, vae=self.pipe.vae), device=device)

    @torch.no_grad()
    def latents(self, frames: np.ndarray, chunk: int = 8) -> torch.Tensor:
        """``(T, H, W, 3)`` uint8 -> scaled latents ``(T, C, h, w)`` fp32 on the CPU."""
        from model.vae_io import vae_encode

        vae = self.pipe.vae
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        out = [vae_encode(vae, x[i : i + chunk].to(self.device)).float().cpu() for i in range(0, len(x), chunk)]
        return torch.cat(out) * vae.config.scaling_factor

    @torch.no_grad()
    def conditioning(self, frame: np.ndarray, noise_aug: float, draws: int, seed: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(CLIP embedding ``(1, D)``, ``draws`` noise-augmented latents ``(K, C, h, w)``) of one frame, on the CPU."""
        import PIL.Image

        from model.vae_io import vae_encode

        emb = self.pipe._encode_image(PIL.Image.fromarray(frame), self.device, 1, False)[0].float().cpu()
        x = torch.from_numpy(frame).permute(2, 0, 1).float()[None] / 127.5 - 1.0
        g = torch.Generator().manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
        noisy = x + noise_aug * torch.randn((draws, *x.shape[1:]), generator=g)
        return emb, vae_encode(self.pipe.vae, noisy.to(self.device)).float().cpu()


def mask_counts(ids: np.ndarray, entity_ids: np.ndarray, cell: int) -> torch.Tensor:
    """``(T, N, h, w)`` uint8: pixels of each entity in each ``cell`` x ``cell`` latent cell (the loss mask's source)."""
    t, H, W = ids.shape
    out = np.empty((t, len(entity_ids), H // cell, W // cell), np.uint8)
    for k, e in enumerate(entity_ids):
        out[:, k] = (ids == e).reshape(t, H // cell, cell, W // cell, cell).sum((2, 4))
    return torch.from_numpy(out)


def encode_clips(workdir_url: str, cfg: Config, video_ids: list[str]) -> dict:
    """Compute the missing cache files of ``video_ids`` (one shard) on this task's device; append missing entity vectors.

    Returns ``{"encoded": [cache files written], "embedded": rows appended, "key": the cache key, "device": str, "seconds": float}``.
    """
    wd = Workdir(workdir_url)
    t0 = time.perf_counter()
    m, tr = cfg.model, cfg.train
    wanted = set(video_ids)
    specs = [s for s in clip_specs(wd, cfg)[0] if s.video_id in wanted]
    key = cache_key(cfg)
    jobs = [(s, mir) for s in specs for mir in (False, True)[: 1 + tr.hflip] if not wd.exists(cache_file(wd, cfg, key, s, mir))]
    if not jobs:
        return {"encoded": [], "embedded": 0, "key": key, "device": "-", "seconds": 0.0}
    device = encode_device()
    enc = Encoders(cfg, device)
    vectors, embedded = _vectors(wd, cfg, enc, {s.video_id for s, _ in jobs}, specs)
    cell = vae_factor(enc.pipe.vae.config)  # pixels per latent cell side
    written = []
    for spec, mirrored in jobs:
        frames, ids = load_cached_clip(wd, spec.frames_path)
        frames, ids = resize_clip(frames, ids, (m.height, m.width))
        if mirrored:
            frames, ids = np.ascontiguousarray(frames[:, :, ::-1]), np.ascontiguousarray(ids[:, :, ::-1])
        name_seed = int(hashlib.sha1(spec.video_id.encode()).hexdigest()[:8], 16)
        firsts = {t: enc.conditioning(frames[t], cfg.generate.noise_aug_strength, tr.cond_noise_draws, [tr.seed, name_seed, t, int(mirrored)])
                  for t in spec.starts}
        vec = vectors.get(spec.video_id)
        payload = {
            "latents": enc.latents(frames),
            "embeddings": {int(t): e for t, (e, _) in firsts.items()},
            "cond": {int(t): c for t, (_, c) in firsts.items()},
            "mask_counts": mask_counts(ids, spec.entity_ids, cell),
            "cell": int(cell),
            "entity_ids": [int(e) for e in spec.entity_ids],
            "vectors": None if vec is None else torch.from_numpy(np.stack([vec[int(e)] for e in spec.entity_ids])),
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        rel = cache_file(wd, cfg, key, spec, mirrored)
        write_blob(wd, rel, buf.getvalue())
        written.append(rel)
    return {"encoded": written, "embedded": embedded, "key": key, "device": str(device), "seconds": time.perf_counter() - t0}


def _vectors(wd: Workdir, cfg: Config, enc: Encoders, videos: set[str], specs: list[ClipSpec]) -> tuple[dict, int]:
    """{video: {entity: vector}} for ``videos`` from ``entity_embeddings`` (this extractor's), computing the missing ones."""
    if enc.extractor is None:
        return {}, 0
    from tasks.embeddings import embed_videos

    ext = enc.extractor.extractor_id
    emb = wd.read("entity_embeddings", filter=(pc.field("dataset") == cfg.train.dataset) & (pc.field("extractor") == ext))
    have = {(v, int(e)): np.asarray(x, np.float32) for v, e, x in zip(emb["video_id"], emb["entity_id"], emb["vector"]) if v in videos}
    todo = [dict(dataset=cfg.train.dataset, video_id=s.video_id, entity_id=int(e), frames_path=s.frames_path)
            for s in specs if s.video_id in videos for e in s.entity_ids if (s.video_id, int(e)) not in have]
    rows = embed_videos(wd.url, todo, cfg.model, extractor=enc.extractor) if todo else []
    added = wd.append("entity_embeddings", rows) if rows else 0
    for r in rows:
        have[(r["video_id"], int(r["entity_id"]))] = np.asarray(r["vector"], np.float32)
    out: dict[str, dict[int, np.ndarray]] = {}
    for s in specs:
        if s.video_id in videos and all((s.video_id, int(e)) in have for e in s.entity_ids):
            out[s.video_id] = {int(e): have[(s.video_id, int(e))] for e in s.entity_ids}
    return out, added


def shards(video_ids: list[str], size: int) -> list[list[str]]:
    return [video_ids[i : i + size] for i in range(0, len(video_ids), size)]
