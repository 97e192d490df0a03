"""Running the frozen SVD UNet with the controller's residuals added, and the one call training uses.

diffusers' ``UNetSpatioTemporalConditionModel.forward`` takes no ControlNet residuals, so
``unet_forward_with_control`` walks the same modules in the same order and adds
``down_block_additional_residuals`` to the skip connections and
``mid_block_additional_residual`` to the middle block's output. With no residuals (or
all-zero ones) its output equals ``unet(...)`` exactly.
"""

from __future__ import annotations

import torch

from .controlnet import DragAnythingControlNetModel, EntityInputs
from .svd_blocks import down_blocks, time_embedding


def unet_forward_with_control(
    unet,
    sample: torch.Tensor,
    timestep: torch.Tensor | float | int,
    encoder_hidden_states: torch.Tensor,
    added_time_ids: torch.Tensor,
    down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
    mid_block_additional_residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, T, 2C, h, w)`` -> ``(B, T, C, h, w)`` (SVD: C = 4 latent channels): the UNet's prediction, with control added.

    This walks the UNet's modules instead of calling its ``forward``, so a model-offload hook
    (``enable_model_cpu_offload``) is triggered here, as diffusers' ``apply_forward_hook`` does.
    """
    hook = getattr(unet, "_hf_hook", None)
    if hook is not None:
        hook.pre_forward(unet)
    up_factor = 2**unet.num_upsamplers
    forward_upsample_size = any(s % up_factor != 0 for s in sample.shape[-2:])
    upsample_size = None

    timesteps = timestep
    if not torch.is_tensor(timesteps):
        dtype = torch.float64 if isinstance(timestep, float) else torch.int64
        timesteps = torch.tensor([timesteps], dtype=dtype, device=sample.device)
    elif timesteps.dim() == 0:
        timesteps = timesteps[None].to(sample.device)
    batch, frames = sample.shape[:2]
    timesteps = timesteps.expand(batch)

    emb = time_embedding(unet, timesteps, added_time_ids, frames, sample.dtype)
    encoder_hidden_states = encoder_hidden_states.repeat_interleave(frames, dim=0)
    h = unet.conv_in(sample.flatten(0, 1))
    image_only_indicator = torch.zeros(batch, frames, dtype=h.dtype, device=h.device)
    h, down_res = down_blocks(unet.down_blocks, h, emb, encoder_hidden_states, image_only_indicator)

    if down_block_additional_residuals is not None:
        if len(down_block_additional_residuals) != len(down_res):
            raise ValueError(
                f"the controller gives {len(down_block_additional_residuals)} skip residuals but the UNet has "
                f"{len(down_res)} skip connections; build the controller with DragAnythingControlNetModel.from_unet(unet)"
            )
        down_res = tuple(r + c for r, c in zip(down_res, down_block_additional_residuals))

    h = unet.mid_block(
        hidden_states=h, temb=emb, encoder_hidden_states=encoder_hidden_states, image_only_indicator=image_only_indicator
    )
    if mid_block_additional_residual is not None:
        h = h + mid_block_additional_residual

    for i, block in enumerate(unet.up_blocks):
        res = down_res[-len(block.resnets) :]
        down_res = down_res[: -len(block.resnets)]
        if i < len(unet.up_blocks) - 1 and forward_upsample_size:
            upsample_size = down_res[-1].shape[2:]
        kwargs = dict(
            hidden_states=h,
            temb=emb,
            res_hidden_states_tuple=res,
            upsample_size=upsample_size,
            image_only_indicator=image_only_indicator,
        )
        if getattr(block, "has_cross_attention", False):
            kwargs["encoder_hidden_states"] = encoder_hidden_states
        h = block(**kwargs)

    h = unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))
    return h.reshape(batch, frames, *h.shape[1:])


def controlled_prediction(
    unet,
    controlnet: DragAnythingControlNetModel,
    noisy_latents: torch.Tensor,
    image_latents: torch.Tensor,
    image_embeddings: torch.Tensor,
    added_time_ids: torch.Tensor,
    timestep: torch.Tensor | float,
    conditions: dict[str, torch.Tensor] | None = None,
    entities: list[EntityInputs] | None = None,
    conditioning_scale: float = 1.0,
    frame_chunk: int | None = 4,
    encoded_conditions: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training step's forward: UNet prediction ``(B, T, C, h, w)`` with the controller's residuals added.

    Args:
        noisy_latents: ``(B, T, C, h, w)``, already scaled for the UNet input (``scheduler.scale_model_input``).
        image_latents: ``(B, T, C, h, w)`` (the first frame's latent repeated over T) or ``(B, C, h, w)``.
        image_embeddings: ``(B, 1, D)`` CLIP image embeddings.
        added_time_ids: ``(B, 3)``: fps - 1, motion bucket, noise augmentation.
        conditions: ``{name: (B, T, C, s*h, s*w)}`` maps from ``maps.render_conditions`` (batched), s = the controller's ``pixel_scale``.
        entities: one ``EntityInputs`` per video for the fast entity path (instead of ``conditions['entity']``).
        encoded_conditions: the conditioning encoders' output for them, computed once (see the controller's ``forward``).
    """
    if image_latents.dim() == 4:
        image_latents = image_latents[:, None].expand(-1, noisy_latents.shape[1], -1, -1, -1)
    sample = torch.cat([noisy_latents, image_latents.to(noisy_latents.dtype)], dim=2)
    # each model reads its inputs in its own dtype (a bf16 UNet under an fp32 controller, say); under autocast
    # these casts change nothing
    # (under DDP the controller comes wrapped, and a DistributedDataParallel has no dtype: its module has)
    cdt, udt = getattr(controlnet, "module", controlnet).dtype, unet.dtype
    down, mid = controlnet(
        sample.to(cdt),
        timestep,
        encoder_hidden_states=image_embeddings.to(cdt),
        added_time_ids=added_time_ids.to(cdt),
        conditions=conditions,
        entities=entities,
        conditioning_scale=conditioning_scale,
        frame_chunk=frame_chunk,
        return_dict=False,
        encoded_conditions=encoded_conditions,
    )
    return unet_forward_with_control(
        unet,
        sample.to(udt),
        timestep,
        encoder_hidden_states=image_embeddings.to(udt),
        added_time_ids=added_time_ids.to(udt),
        down_block_additional_residuals=tuple(r.to(udt) for r in down),
        mid_block_additional_residual=mid.to(udt),
    )
