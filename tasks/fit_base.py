"""The tiny base model's fit: the embedded tiny VAE, then the base video UNet, on sample clips.

Two callers share ``fit_base``:

- ``draganything fit-base`` (``fit_shipped_base``): renders its own sample videos (a seed
  no demo uses, so the base never saw the controller's clips), fits for much longer than
  a demo could, and writes an SVD folder in diffusers layout (safetensors) plus
  ``fit.json``, the record of how it was made. The package ships one such folder,
  ``model/tiny_base/``, which the tiny profile loads (``model.tiny.pretrained``).
- ``train.fit_base.enabled`` (``fit_tiny_base``): the old in-demo fit on the workdir's
  labelled clips, saved under ``base/`` and reused.

Refused for a real SVD: the point is only to give the CPU default a base worth controlling.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from core.config import Config
from core.media import load_cached_clip, resize_clip
from core.progress import line_bar
from core.tables import Workdir
from model import training as T
from model.unet_control import unet_forward_with_control
from tasks.train_data import conditioning_latents

FIT_RECORD = "fit.json"


def fit_base(cfg: Config, clips: torch.Tensor, seed: int, progress: bool = True) -> tuple[object, dict]:
    """Fit a fresh tiny base (random weights from ``model.tiny.seed``) on ``clips`` ``(V, T, 3, H, W)`` in [-1, 1].

    Returns the ``StableVideoDiffusionPipeline`` and a record (mean losses of the last 100
    steps of each part, seconds). The VAE fits on single frames, the UNet on whole clips,
    as in SVD's training; every draw comes from ``seed``.
    """
    from diffusers import StableVideoDiffusionPipeline

    from model.tiny import build_tiny_svd, tiny_sizes

    m, fb, g = cfg.model, cfg.train.fit_base, cfg.generate
    if m.base_model_path:
        raise ValueError("the tiny base fit is for the embedded tiny model; unset model.base_model_path (a real SVD is never refitted)")
    pipe = StableVideoDiffusionPipeline(**build_tiny_svd(tiny_sizes(m)))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    record: dict = {}

    t0 = time.perf_counter()
    vae = pipe.vae.train().requires_grad_(True)
    restore = _framewise_decoder(vae)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=fb.vae_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: T.lr_factor(s, fb.vae_steps, fb.cosine))
    T_, n_frames = clips.shape[1], 4 * fb.batch_size
    losses = []
    for _ in line_bar(iterable=range(fb.vae_steps), desc="fit tiny VAE", disable=not progress, mininterval=10):
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
        sched.step()
        restore()
        losses.append(float(loss.detach()))
    record["vae_loss"] = float(np.mean(losses[-100:])) if losses else None
    record["vae_seconds"] = round(time.perf_counter() - t0, 1)
    vae.eval().requires_grad_(False)

    t0 = time.perf_counter()
    with torch.no_grad():
        # Unit-variance latents, as SVD's preconditioning assumes (sigma_data = 1).
        std = torch.cat([vae.encode(v).latent_dist.mode() for v in clips]).std()
        vae.register_to_config(scaling_factor=float(1.0 / std))
        latents = torch.stack([vae.encode(v).latent_dist.mode() * vae.config.scaling_factor for v in clips])
        embeds = torch.stack([pipe._encode_image(_pil(v[0]), "cpu", 1, False)[0] for v in clips])
    unet = pipe.unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=fb.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: T.lr_factor(s, fb.unet_steps, fb.cosine))
    edm = T.EDM(fb.p_mean, fb.p_std)
    losses = []
    for _ in line_bar(iterable=range(fb.unet_steps), desc="fit tiny base UNet", disable=not progress, mininterval=10):
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
        sched.step()
        losses.append(float(loss.detach()))
    record["unet_loss"] = float(np.mean(losses[-100:])) if losses else None
    record["unet_seconds"] = round(time.perf_counter() - t0, 1)
    unet.eval().requires_grad_(False)
    return pipe, record


# --- the in-demo fit (train.fit_base.enabled) --------------------------------------------


def fit_tiny_base(wd: Workdir, cfg: Config, progress: bool = True) -> str:
    """Fit the embedded tiny VAE, then the base UNet, on the workdir's labelled clips; saved as an SVD folder.

    Returns the folder (relative to the workdir), reused when it exists.
    """
    m, fb = cfg.model, cfg.train.fit_base
    if m.base_model_path:
        raise ValueError("train.fit_base is for the embedded tiny model; set it off when model.base_model_path is a real SVD")
    split = fb.split or cfg.train.split
    digest = hashlib.sha1(json.dumps([m.tiny.model_dump(mode="json"), m.num_frames, m.height, m.width, fb.model_dump(mode="json"),
                                      cfg.train.dataset, split], sort_keys=True).encode()).hexdigest()[:10]
    rel = f"base/tiny-{digest}"
    if wd.has_dir(rel):
        return rel
    labels = wd.read("labels", columns=["dataset", "split", "video_id", "frames_path"],
                     filter=(pc.field("dataset") == cfg.train.dataset) & (pc.field("split") == split))
    videos = []
    for path in sorted(set(labels["frames_path"])):
        frames, ids = load_cached_clip(wd, path)
        if len(frames) >= m.num_frames:
            f, _ = resize_clip(frames[: m.num_frames], ids[: m.num_frames], (m.height, m.width))
            videos.append(_to_tensor(f))
    if not videos:
        raise ValueError(f"no labelled clip of split '{split}' to fit the tiny base model on; run `draganything labels --split {split}` first")
    pipe, _ = fit_base(cfg, torch.stack(videos), cfg.train.seed, progress)
    wd.write_dir_atomic(rel, lambda folder: pipe.save_pretrained(folder, safe_serialization=True))
    return rel


# --- the shipped base (draganything fit-base) ---------------------------------------------


def sample_clips(cfg: Config, n_videos: int, variants: int, data_seed: int, world: str) -> torch.Tensor:
    """Clips ``(V, T, 3, H, W)`` of freshly rendered sample videos, read as the labels stage reads them
    (JPEG frames resized to ``labels.resolution``) and brought to the model's size as training does."""
    from core.sample_data import WORLDS, write_sample_dataset
    from tasks.labels import load_clip

    m = cfg.model
    frames_needed = cfg.labels.frames.needed()
    with tempfile.TemporaryDirectory() as tmp:
        write_sample_dataset(Path(tmp), n_videos=n_videos, n_frames=frames_needed, seed=data_seed, val_every=max(2, variants),
                             variants=variants, world=WORLDS[world])
        videos = []
        for vid in sorted(p.name for p in (Path(tmp) / "imgs").iterdir()):
            frames, ids, _, _ = load_clip(Path(tmp), vid, cfg.labels)
            f, _ = resize_clip(frames[: m.num_frames], ids[: m.num_frames], (m.height, m.width))
            videos.append(_to_tensor(f))
    return torch.stack(videos)


def fit_shipped_base(out: Path, cfg: Config, seed: int, n_videos: int, variants: int, data_seed: int, world: str,
                     progress: bool = True, command: str | None = None) -> dict:
    """Render sample videos, fit a tiny base on them and write it to ``out`` (whole, or not at all).

    ``out`` gets the SVD folder (``model_index.json``, ``unet/``, ``vae/``, ``image_encoder/``,
    ``scheduler/``, ``feature_extractor/``, safetensors) and ``fit.json``: the command, seeds,
    data, fit settings, model sizes, losses, times and the weights' fingerprints.
    """
    from model.tiny import load_svd_components, weights_fingerprint

    out = Path(out)
    t0 = time.perf_counter()
    clips = sample_clips(cfg, n_videos, variants, data_seed, world)
    data_seconds = round(time.perf_counter() - t0, 1)
    pipe, record = fit_base(cfg, clips, seed, progress)
    record = {
        "command": command,
        "seed": seed,
        "data": {"generator": "core.sample_data", "videos": n_videos, "variants": variants, "seed": data_seed, "world": world,
                 "frames": int(clips.shape[1]), "size": [int(clips.shape[-2]), int(clips.shape[-1])], "seconds": data_seconds},
        "fit_base": cfg.train.fit_base.model_dump(mode="json"),
        "edm": {"p_mean": cfg.train.fit_base.p_mean, "p_std": cfg.train.fit_base.p_std},
        "model_tiny": cfg.model.tiny.model_dump(mode="json"),
        **record,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        saved = load_svd_components(tmp)  # the fingerprints of what a loader gets back from these files
        record["fingerprints"] = {name: weights_fingerprint(saved[name]) for name in ("unet", "vae", "image_encoder")}
        (tmp / FIT_RECORD).write_text(json.dumps(record, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


# --- helpers ---------------------------------------------------------------------------------


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _random_crops(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """One random ``size`` x ``size`` window of each image ``(N, 3, H, W)`` (the VAE is convolutional,
    so it learns from windows what it then does on whole frames, at a fraction of the cost)."""
    H, W = x.shape[-2:]
    if size >= H and size >= W:
        return x
    h, w = min(size, H), min(size, W)
    ys, xs = rng.integers(0, H - h + 1, len(x)), rng.integers(0, W - w + 1, len(x))
    return torch.stack([img[:, y : y + h, x0 : x0 + w] for img, y, x0 in zip(x, ys, xs)])


def _framewise_decoder(vae) -> callable:
    """Switch the temporal decoder's time mixing off, so frames decode independently.

    Fitted on single frames, the tiny VAE cannot also learn its temporal layers; with every
    ``AlphaBlender`` fully on its spatial input and the final time convolution reduced to
    its centre tap, decoding T frames is decoding each frame alone. Returns a function that
    re-applies this after optimizer steps.
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
