"""The input side of an SVD UNet, shared by the UNet walk with control and the controller (its copy).

Both modules carry the same names (``time_proj``, ``time_embedding``, ``add_time_proj``,
``add_embedding``, ``down_blocks``), so one walk serves both.
"""

from __future__ import annotations

import torch


def time_embedding(module, timesteps: torch.Tensor, added_time_ids: torch.Tensor, frames: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B,)`` timesteps and ``(B, 3)`` added time ids -> the ``(B * frames, D)`` embedding every block reads."""
    batch = timesteps.shape[0]
    emb = module.time_embedding(module.time_proj(timesteps).to(dtype=dtype))
    time_embeds = module.add_time_proj(added_time_ids.flatten()).reshape(batch, -1).to(emb.dtype)
    return (emb + module.add_embedding(time_embeds)).repeat_interleave(frames, dim=0)


def down_blocks(
    blocks, h: torch.Tensor, emb: torch.Tensor, encoder_hidden_states: torch.Tensor, image_only_indicator: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Run the down blocks from the ``conv_in`` features ``h``; -> (last features, every skip connection, ``h`` first)."""
    skips = (h,)
    for block in blocks:
        kwargs = dict(hidden_states=h, temb=emb, image_only_indicator=image_only_indicator)
        if getattr(block, "has_cross_attention", False):
            kwargs["encoder_hidden_states"] = encoder_hidden_states
        h, res = block(**kwargs)
        skips += res
    return h, skips
