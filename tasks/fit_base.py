"""The tiny base fit: for the CPU demo, fit the embedded tiny VAE, then the base UNet, before the controller.

The point is only to give the CPU demo a base model worth controlling; it is refused
for a real SVD (``model.base_model_path``). The fitted base is saved as an SVD folder
under ``base/tiny-<digest>`` and reused.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.compute as pc
import torch
from tqdm import tqdm

from core.config import Config
from core.media import load_cached_clip, resize_clip
from core.tables import Workdir
from model import training as T
from model.unet_control import unet_forward_with_control
from tasks.train_data import conditioning_latents


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
