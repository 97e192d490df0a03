"""One step of controller training: the loss of a batch and the optimizer step after it.

Imports only model/ and torch, so ``benchmarks/gpu.py`` runs the same step as the training stage
(``tasks.train.train_loop``) on a bare GPU machine without the orchestration stack.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from model import training as T
from model.unet_control import controlled_prediction

if TYPE_CHECKING:
    from core.config import Config
    from tasks.train_data import Batch


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


def optimizer_step(opt, masters: T.MasterWeights, scaler, max_grad_norm: float, ema: list[torch.Tensor] | None, ema_decay) -> None:
    """After the backward passes: gradients onto the fp32 masters, unscaled (fp16), clipped, stepped, rounded
    back into the controller, and the fp32 EMA moved towards the masters."""
    masters.grads_to_master()
    if scaler:
        scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(masters.master, max_grad_norm)
    (scaler.step(opt), scaler.update()) if scaler else opt.step()
    masters.to_params()
    if ema is not None:
        with torch.no_grad():
            for e, p in zip(ema, masters.master):
                e.lerp_(p.detach().float(), 1 - ema_decay)
