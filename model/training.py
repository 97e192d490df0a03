"""The maths of SVD fine-tuning: EDM noise levels, preconditioning, the masked loss.

SVD img2vid is an EDM-preconditioned v-prediction model (diffusers'
``EulerDiscreteScheduler`` with ``timestep_type="continuous"``): for a noise level
sigma the UNet sees ``x / sqrt(sigma^2 + 1)`` and ``0.25 log(sigma)`` as its
timestep, and the denoised estimate is ``c_skip x + c_out F(x)`` with
``c_skip = 1 / (sigma^2 + 1)`` and ``c_out = -sigma / sqrt(sigma^2 + 1)``. Training
draws ``log sigma ~ N(P_mean, P_std^2)`` and weights the squared error by
``(sigma^2 + 1) / sigma^2`` (Karras et al. 2022).

Plain functions on tensors; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class EDM:
    p_mean: float = 0.7
    p_std: float = 1.6

    def sample_sigmas(self, batch: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        z = torch.randn(batch, generator=generator, device="cpu").to(device)
        return torch.exp(self.p_mean + self.p_std * z)


def lr_factor(step: int, total: int, cosine: bool, warmup: int = 0) -> float:
    """The learning-rate multiplier at optimizer step ``step`` of ``total``: a linear warmup over
    ``warmup`` steps, then 1 throughout, or a cosine from 1 down to 0.05 at the last step."""
    warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if not cosine or total <= 1:
        return warm
    return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total - 1) / (total - 1))))


def precondition(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) for v-prediction with EDM scaling, shaped like ``sigma``."""
    s2 = sigma**2
    c_skip = 1.0 / (s2 + 1.0)
    c_out = -sigma / torch.sqrt(s2 + 1.0)
    c_in = 1.0 / torch.sqrt(s2 + 1.0)
    c_noise = 0.25 * torch.log(sigma)
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor) -> torch.Tensor:
    return (sigma**2 + 1.0) / sigma**2


def _bcast(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *([1] * (like.dim() - 1)))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the pixels where ``mask`` > 0 (all pixels without a mask).

    pred/target ``(B, T, C, h, w)``; mask ``(B, T, 1, h, w)`` in [0, 1] (soft at entity
    edges); weight ``(B,)``. Each sample's error is normalised by its own mask area,
    so a small entity counts as much as a large one; a sample whose mask is empty
    contributes nothing (and no gradient).
    """
    err = (pred.float() - target.float()) ** 2
    if mask is None:
        per_sample = err.flatten(1).mean(1)
    else:
        m = mask.float().expand_as(err)
        area = m.flatten(1).sum(1)
        per_sample = (err * m).flatten(1).sum(1) / area.clamp_min(1e-8)
        per_sample = torch.where(area > 0, per_sample, torch.zeros_like(per_sample))
    if weight is not None:
        per_sample = per_sample * weight.float()
    return per_sample.mean()


def add_noise(latents: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    noise = torch.randn(latents.shape, generator=generator, device="cpu").to(latents.device, latents.dtype)
    return latents + _bcast(sigma, latents).to(latents.dtype) * noise


def denoise(model_output: torch.Tensor, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    c_skip, c_out, _, _ = precondition(sigma)
    return _bcast(c_skip, noisy) * noisy + _bcast(c_out, noisy) * model_output


def mask_to_latent(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, T, H, W)`` pixel mask -> ``(B, T, 1, h, w)`` area fractions at latent resolution."""
    B, T = mask.shape[:2]
    return F.adaptive_avg_pool2d(mask.float().flatten(0, 1)[:, None], (h, w)).reshape(B, T, 1, h, w)


def time_ids(fps: int, motion_bucket_id: int, noise_aug_strength: float, batch: int, device="cpu") -> torch.Tensor:
    """SVD's added time ids (the pipeline passes fps - 1)."""
    return torch.tensor([[fps - 1, motion_bucket_id, noise_aug_strength]], dtype=torch.float32, device=device).repeat(batch, 1)


class MasterWeights:
    """fp32 master copies of low-precision (bf16/fp16) trainable parameters, for the optimizer to step.

    bf16 keeps 8 significant bits: an AdamW update of lr 1e-5 to a weight of 0.01 is 1/1000 of it, under half
    of bf16's spacing there, so stepping bf16 weights directly rounds most updates away. The optimizer steps
    these copies (fp32 parameters are their own master, no copy) and ``to_params`` rounds them back after each
    step, so the forward pass runs in the low precision and nothing accumulates in it.
    """

    def __init__(self, params: list[torch.Tensor]):
        self.params = list(params)
        self.master = [p if p.dtype == torch.float32 else p.detach().float().clone().requires_grad_(True) for p in self.params]

    def grads_to_master(self) -> None:
        """Move the parameters' gradients onto the masters (in fp32), before unscaling, clipping and stepping."""
        for p, m in zip(self.params, self.master):
            if m is not p:
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None

    @torch.no_grad()
    def to_params(self) -> None:
        for p, m in zip(self.params, self.master):
            if m is not p:
                p.copy_(m)
