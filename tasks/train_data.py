"""The training stage's data: the preprocess stage's caches as clips, and the batches.

- ``load_clips``: every labelled clip at the model's size from its cache files
  (``tasks.preprocess``: latents, CLIP embeddings and noise-augmented conditioning latents
  of the window starts, the loss mask's pixel counts at latent resolution, entity vectors)
  and the labels' trajectories and radii. No model is loaded: a training rank never runs the
  VAE, CLIP or an entity backbone.
- ``batch_for_step``: the batch of step s is a pure function of (seed, s): random
  clips, a random window of each (``train.windows``, ``train.reverse``), a random
  entity subset, one of the cached conditioning draws, maps and loss masks. So a resumed
  run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from core.windows import window
from model.controlnet import EntityInputs
from model.maps import paint_order, reads_entity_vectors, render_conditions

if TYPE_CHECKING:  # the batches need neither: benchmarks/gpu.py runs batch_for_step on a bare GPU machine
    from core.config import Config
    from core.tables import Workdir


@dataclass
class Clip:
    """One labelled video at the model's size; training draws windows ("views") of it."""

    video_id: str
    latents: torch.Tensor  # (T, C, h, w) every labelled frame, scaled by the VAE's scaling factor
    first_frames: dict[int, tuple[torch.Tensor, torch.Tensor]]  # frame -> ((K, C, h, w) noise-augmented image latents, (1, D) CLIP embedding)
    entity_ids: np.ndarray  # (N,)
    centers: torch.Tensor  # (T, N, 2) model pixels
    radii: torch.Tensor  # (T, N) incircle radius, model pixels
    usable: np.ndarray  # (T, N) visible and large enough to condition on, when that frame comes first
    vectors: torch.Tensor | None  # (N, C)
    mask_counts: torch.Tensor  # (T, N, h, w) uint8: each entity's pixels per latent cell
    cell: int  # pixels per latent cell side
    views: list[tuple[int, bool]]  # (start, backwards): windows of num_frames with a usable entity on their first frame

    window = staticmethod(window)


class CacheMissing(RuntimeError):
    """Training found clips the preprocess stage has not encoded."""


def load_clips(wd: Workdir, cfg: Config, key: str | None = None) -> list[Clip]:
    """Every clip of (train.dataset, train.split) with a usable entity, from the preprocess stage's caches.

    ``key``: the cache key the preprocess stage reported (a rank then reads no file of the base but
    the caches); by default it is computed from the base's files (``tasks.preprocess.cache_key``).
    """
    from tasks.preprocess import cache_file, cache_key, clip_specs, missing, read_cache

    m, tr = cfg.model, cfg.train
    specs, n_videos = clip_specs(wd, cfg)
    key = key or cache_key(cfg)
    lacking = missing(wd, cfg, specs, key)
    if lacking:
        raise CacheMissing(
            f"{len(lacking)} of {len(specs)} training clips have no preprocess cache in {wd.url}/cache/train (first: "
            f"{lacking[0]}); run the preprocess stage first (`draganything train` runs it before training)"
        )
    needs_vectors = reads_entity_vectors(m.conditioning)
    clips = []
    for spec in specs:
        for mirrored in (False, True)[: 1 + tr.hflip]:
            enc = read_cache(wd, cache_file(wd, cfg, key, spec, mirrored))
            if needs_vectors and enc["vectors"] is None:
                continue  # an entity without a vector (its first-frame mask was empty)
            centers = torch.from_numpy(spec.centers.copy())
            if mirrored:
                # The entity vectors are pooled over the mask, so they stand for the mirrored entity as well.
                centers[..., 0] = m.width - 1 - centers[..., 0]
            clips.append(Clip(
                video_id=spec.video_id + ("~hflip" if mirrored else ""),
                latents=enc["latents"],
                first_frames={int(t): (enc["cond"][t], enc["embeddings"][t]) for t in spec.starts},
                entity_ids=spec.entity_ids,
                centers=centers,
                radii=torch.from_numpy(spec.radii),
                usable=spec.usable,
                vectors=enc["vectors"] if needs_vectors else None,
                mask_counts=enc["mask_counts"],
                cell=int(enc["cell"]),
                views=spec.views,
            ))
    if not clips:
        raise ValueError(f"none of the {n_videos} labelled videos has an entity usable for training at {m.height}x{m.width}")
    return clips


@dataclass
class Batch:
    latents: torch.Tensor  # (B, T, C, h, w)
    image_latents: torch.Tensor  # (B, C, h, w) the noise-augmented first frame's latent (unscaled), as SVD conditions on it
    embeddings: torch.Tensor  # (B, 1, D)
    conditions: dict[str, torch.Tensor]  # name -> (B, T, C, H, W)
    entities: list[EntityInputs] | None
    mask: torch.Tensor  # (B, T, 1, h, w) entity-pixel fraction at latent size
    video_ids: list[str]

    def to(self, device) -> Batch:
        ents = None if self.entities is None else [EntityInputs(e.vectors.to(device), e.centers.to(device), e.radii.to(device)) for e in self.entities]
        return Batch(self.latents.to(device), self.image_latents.to(device), self.embeddings.to(device),
                     {k: v.to(device) for k, v in self.conditions.items()}, ents, self.mask.to(device), self.video_ids)


def batch_for_step(clips: list[Clip], step: int, cfg: Config, rank: int = 0, device=None) -> Batch:
    """The batch of optimizer step ``step`` (and DDP rank): a pure function of (seed, step, rank).

    ``device``: where the maps are rendered (the training device: a dense entity map of the paper's
    setting is 2.8 GB, painted there instead of on the host and copied)."""
    m, tr = cfg.model, cfg.train
    rng = np.random.default_rng([tr.seed, step, rank])
    picks = rng.integers(0, len(clips), size=tr.batch_size)
    conds, ents, masks, lats, cond_lats, embs = [], [], [], [], [], []
    for i in picks:
        c = clips[i]
        # (one view draws nothing, so a run without windows or reverse sees the batches it always did)
        frames = Clip.window(*(c.views[int(rng.integers(0, len(c.views)))] if len(c.views) > 1 else c.views[0]), m.num_frames)
        first = int(frames[0])
        usable = np.flatnonzero(c.usable[first])
        k = int(rng.integers(1, min(len(usable), tr.max_entities) + 1))
        chosen = np.sort(rng.choice(usable, size=k, replace=False))
        chosen = chosen[paint_order(c.radii[first, chosen]).numpy()]
        centers, radii = c.centers[frames][:, chosen].to(device), c.radii[first, chosen].to(device)
        vectors = None if c.vectors is None else c.vectors[chosen].to(device)
        conds.append(
            render_conditions(
                m.conditioning, centers, radii, m.height, m.width, vectors=vectors,
                sigma_ratio=m.gaussian_sigma_ratio, support_ratio=m.gaussian_support_ratio, dense_entity=m.encoder == "dense",
            )
        )
        if vectors is not None and m.encoder != "dense":
            ents.append(EntityInputs(vectors, centers, radii))
        # panoptic entities are disjoint: the chosen ones' pixel counts add up to their union's
        counts = c.mask_counts[torch.from_numpy(frames)][:, torch.from_numpy(chosen)].sum(1, dtype=torch.float32)
        masks.append((counts / c.cell**2)[:, None])
        lats.append(c.latents[frames])
        draws, emb = c.first_frames[first]
        cond_lats.append(draws[int(rng.integers(0, len(draws)))])
        embs.append(emb)
    return Batch(
        latents=torch.stack(lats),
        image_latents=torch.stack(cond_lats),
        embeddings=torch.stack(embs),
        conditions={k: torch.stack([c[k] for c in conds]) for k in conds[0]},
        entities=ents or None,
        mask=torch.stack(masks),
        video_ids=[clips[i].video_id for i in picks],
    )


@torch.no_grad()
def encode_clip(pipe, frames: np.ndarray) -> torch.Tensor:
    """Latents ``(T, C, h, w)`` of ``frames`` (T, H, W, 3) uint8, scaled, as the SVD pipeline computes them (benchmarks)."""
    from model.vae_io import vae_encode

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return vae_encode(pipe.vae, x) * pipe.vae.config.scaling_factor


def conditioning_latents(pipe, pixels: torch.Tensor, noise_aug: float, gen: torch.Generator) -> torch.Tensor:
    """The VAE latents of the conditioning frames ``(B, 3, H, W)`` after SVD's noise augmentation (unscaled);
    for the tiny base's fit, which has its VAE at hand (controller training reads them from the cache)."""
    from model.vae_io import vae_encode

    noisy = pixels + noise_aug * torch.randn(pixels.shape, generator=gen).to(pixels.device)
    return vae_encode(pipe.vae, noisy)
