"""Encoding images with the base VAE the way diffusers' SVD pipeline does, in one place.

An fp16 VAE whose config says ``force_upcast`` (SVD's does: its encoder overflows in
fp16) encodes in fp32 and is cast back afterwards, as ``StableVideoDiffusionPipeline``
does. The input goes to the VAE's device and dtype; the latent keeps them.
"""

from __future__ import annotations

import contextlib

import torch


def needs_upcast(vae) -> bool:
    return vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))


@contextlib.contextmanager
def upcast_vae(vae):
    """Run the block with an fp16 ``force_upcast`` VAE in fp32, then cast it back."""
    upcast = needs_upcast(vae)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(dtype=torch.float16)


@torch.no_grad()
def vae_encode(vae, images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` in [-1, 1] -> the posterior mode ``(N, C, h, w)`` (unscaled), on the VAE's device.

    With model offload (``enable_model_cpu_offload``) the VAE's parameters sit on the CPU until
    its hook moves them, so the input goes to the hook's execution device.
    """
    with upcast_vae(vae):
        param = next(vae.parameters())
        device = getattr(getattr(vae, "_hf_hook", None), "execution_device", None) or param.device
        return vae.encode(images.to(device, param.dtype)).latent_dist.mode()
