"""The training stage's data: labelled clips at the model's size, their cache, and the batches.

- ``load_clips``: every labelled clip at the model's size, with the VAE latents of
  all its frames and the CLIP embeddings of the frames a window may start on,
  computed once (cached under ``cache/train/``), its entities' trajectories, radii
  and vectors (``entity_embeddings``) and panoptic ids.
- ``batch_for_step``: the batch of step s is a pure function of (seed, s): random
  clips, a random window of each (``train.windows``, ``train.reverse``), a random
  entity subset, maps and loss masks. So a resumed run
  sees exactly the batches an uninterrupted one would.
- ``encode_clip``, ``embed_frames``, ``conditioning_latents``: the SVD pipeline's
  encodings (VAE latents, CLIP embeddings, the noise-augmented first frame).
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import torch

from core.config import Config, ModelSettings
from core.geometry import rescale
from core.media import load_cached_clip, read_blob, resize_clip, write_blob
from core.tables import Workdir
from model import training as T
from model.controlnet import EntityInputs
from model.maps import paint_order, render_conditions


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


def conditioning_latents(pipe, pixels: torch.Tensor, noise_aug: float, gen: torch.Generator) -> torch.Tensor:
    """The VAE latents of the conditioning frames ``(B, 3, H, W)`` after SVD's noise augmentation (unscaled)."""
    noisy = pixels + noise_aug * torch.randn(pixels.shape, generator=gen).to(pixels.device)
    return pipe.vae.encode(noisy.to(pipe.vae.dtype)).latent_dist.mode()
