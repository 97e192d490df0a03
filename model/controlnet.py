"""The DragAnything controller: a ControlNet copy of the SVD UNet's encoder plus the conditioning encoders.

``DragAnythingControlNetModel.from_unet(unet, ...)`` copies the frozen UNet's input
convolution, time embeddings, down blocks and middle block (weights included), adds the
conditioning encoders (entity, Gaussian, or a baseline's) whose sum is added to the
copied ``conv_in`` features of the noisy latent, and one zero-initialised 1x1 convolution
per skip connection and for the middle block. Its outputs are the residuals that
``unet_control.unet_forward_with_control`` adds to the frozen UNet, times
``conditioning_scale``; at initialisation they are exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_3d_blocks import UNetMidBlockSpatioTemporal, get_down_block
from diffusers.utils import BaseOutput

from .control_encoder import ControlEncoder
from .maps import condition_channels
from .svd_blocks import down_blocks, time_embedding


@dataclass
class EntityInputs:
    """What the fast entity path needs for one video instead of a painted map.

    vectors ``(N, C)``; centers ``(T, N, 2)`` in pixels of the generated frames; radii ``(N,)`` or ``(T, N)``.
    """

    vectors: torch.Tensor
    centers: torch.Tensor
    radii: torch.Tensor


@dataclass
class ControlNetOutput(BaseOutput):
    """Residuals for the UNet's skip connections (one per ``down_block_res_samples`` entry) and middle block."""

    down_block_res_samples: tuple[torch.Tensor, ...]
    mid_block_res_sample: torch.Tensor


def _zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class DragAnythingControlNetModel(ModelMixin, ConfigMixin):
    r"""
    The UNet arguments mirror [`UNetSpatioTemporalConditionModel`]; the rest configure the control.

    Parameters:
        conditioning (`str`): which representation drives it: `entity+gaussian` (DragAnything),
            `entity`, `gaussian`, `none`, or a baseline: `point`, `trajectory` (MotionCtrl-style),
            `dragnuwa-flow`, `box`. Decides which encoders exist (see `maps.condition_channels`).
        entity_channels (`int`): size of the entity vectors (official: 160).
        encoder_block_out_channels (`tuple[int]`): widths of the conditioning encoders' four blocks.
        encoder_first_stride (`int`): 1 = official full-resolution first convolution, 2 = lighter variant.
        pixel_scale (`int`): the base VAE's spatial factor (SVD: 8): control maps are this many times
            the latent's size, and the encoders reduce them by it.
        encoder_layout (`str`): ``project`` (both encoders of ``ControlEncoder``'s own shape) or ``official``: the
            official conditioning network exactly (``ControlEncoder`` layouts ``official-gaussian`` for the map
            encoders and ``official-entity``, widths ``(E, E, c3, c3)`` for E entity channels), so the released
            weights load (``model.official``).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "DownBlockSpatioTemporal",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        addition_time_embed_dim: int = 256,
        projection_class_embeddings_input_dim: int = 768,
        layers_per_block: int | tuple[int, ...] = 2,
        cross_attention_dim: int | tuple[int, ...] = 1024,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        num_attention_heads: int | tuple[int, ...] = (5, 10, 20, 20),
        num_frames: int = 25,
        conditioning: str = "entity+gaussian",
        entity_channels: int = 160,
        encoder_block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        encoder_first_stride: int = 1,
        pixel_scale: int = 8,
        encoder_layout: str = "project",
    ):
        super().__init__()
        n = len(down_block_types)
        heads = (num_attention_heads,) * n if isinstance(num_attention_heads, int) else tuple(num_attention_heads)
        cross = (cross_attention_dim,) * n if isinstance(cross_attention_dim, int) else tuple(cross_attention_dim)
        layers = (layers_per_block,) * n if isinstance(layers_per_block, int) else tuple(layers_per_block)
        tlayers = (
            (transformer_layers_per_block,) * n
            if isinstance(transformer_layers_per_block, int)
            else tuple(transformer_layers_per_block)
        )

        # the copy of the UNet's input side (same names, so weights load from the UNet's state dict)
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        time_embed_dim = block_out_channels[0] * 4
        self.time_proj = Timesteps(block_out_channels[0], True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)
        self.add_time_proj = Timesteps(addition_time_embed_dim, True, downscale_freq_shift=0)
        self.add_embedding = TimestepEmbedding(projection_class_embeddings_input_dim, time_embed_dim)

        # the conditioning encoders, named after the maps they read
        if encoder_layout not in ("project", "official"):
            raise ValueError(f"encoder_layout must be 'project' or 'official', got '{encoder_layout}'")
        c3 = encoder_block_out_channels[-1]

        def encoder(name: str, ch: int) -> ControlEncoder:
            official = encoder_layout == "official"
            widths = (ch, ch, c3, c3) if official and name == "entity" else tuple(encoder_block_out_channels)
            layout = ("official-entity" if name == "entity" else "official-gaussian") if official else "project"
            return ControlEncoder(in_channels=ch, block_out_channels=widths, out_channels=block_out_channels[0],
                                  first_stride=encoder_first_stride, downsample=pixel_scale, layout=layout)

        self.cond_encoders = nn.ModuleDict({name: encoder(name, ch) for name, ch in condition_channels(conditioning, entity_channels).items()})

        self.down_blocks = nn.ModuleList([])
        self.controlnet_down_blocks = nn.ModuleList([_zero_conv(block_out_channels[0])])
        output_channel = block_out_channels[0]
        for i, block_type in enumerate(down_block_types):
            input_channel = output_channel
            output_channel = block_out_channels[i]
            is_final = i == n - 1
            self.down_blocks.append(
                get_down_block(
                    block_type,
                    num_layers=layers[i],
                    transformer_layers_per_block=tlayers[i],
                    in_channels=input_channel,
                    out_channels=output_channel,
                    temb_channels=time_embed_dim,
                    add_downsample=not is_final,
                    resnet_eps=1e-5,
                    cross_attention_dim=cross[i],
                    num_attention_heads=heads[i],
                    resnet_act_fn="silu",
                )
            )
            for _ in range(layers[i]):
                self.controlnet_down_blocks.append(_zero_conv(output_channel))
            if not is_final:
                self.controlnet_down_blocks.append(_zero_conv(output_channel))

        self.mid_block = UNetMidBlockSpatioTemporal(
            block_out_channels[-1],
            temb_channels=time_embed_dim,
            transformer_layers_per_block=tlayers[-1],
            cross_attention_dim=cross[-1],
            num_attention_heads=heads[-1],
        )
        self.controlnet_mid_block = _zero_conv(block_out_channels[-1])
        self.gradient_checkpointing = False

    @classmethod
    def from_unet(
        cls,
        unet,
        conditioning: str = "entity+gaussian",
        entity_channels: int = 160,
        encoder_block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        encoder_first_stride: int = 1,
        pixel_scale: int = 8,
        load_weights_from_unet: bool = True,
        encoder_layout: str = "project",
    ) -> DragAnythingControlNetModel:
        """A controller shaped like ``unet``'s encoder, initialised from its weights (the ControlNet recipe)."""
        c = unet.config
        model = cls(
            in_channels=c.in_channels,
            down_block_types=tuple(c.down_block_types),
            block_out_channels=tuple(c.block_out_channels),
            addition_time_embed_dim=c.addition_time_embed_dim,
            projection_class_embeddings_input_dim=c.projection_class_embeddings_input_dim,
            layers_per_block=c.layers_per_block,
            cross_attention_dim=c.cross_attention_dim,
            transformer_layers_per_block=c.transformer_layers_per_block,
            num_attention_heads=c.num_attention_heads,
            num_frames=c.num_frames,
            conditioning=conditioning,
            entity_channels=entity_channels,
            encoder_block_out_channels=tuple(encoder_block_out_channels),
            encoder_first_stride=encoder_first_stride,
            pixel_scale=pixel_scale,
            encoder_layout=encoder_layout,
        )
        if load_weights_from_unet:
            for name in ("conv_in", "time_proj", "time_embedding", "add_time_proj", "add_embedding", "down_blocks", "mid_block"):
                getattr(model, name).load_state_dict(getattr(unet, name).state_dict())
        model = model.to(unet.device)
        return model if model.dtype == unet.dtype else model.to(dtype=unet.dtype)

    def encode_conditions(
        self,
        conditions: dict[str, torch.Tensor] | None,
        entities: list[EntityInputs] | None,
        height: int,
        width: int,
        num_frames: int,
        frame_chunk: int | None = 4,
    ) -> torch.Tensor | None:
        """Sum of every encoder's output, ``(B*T, C0, h, w)``; None when this controller has no encoders.

        ``conditions[name]``: ``(B, T, C, H, W)`` pixel-scale maps. The entity encoder reads either
        ``conditions['entity']`` (dense, official) or ``entities`` (one ``EntityInputs`` per video, fast path).
        """
        total = None
        for name, encoder in self.cond_encoders.items():
            if name == "entity" and (conditions is None or "entity" not in conditions):
                if entities is None:
                    raise ValueError("the entity encoder needs conditions['entity'] (dense maps) or entities (fast path)")
                out = torch.cat(
                    [
                        encoder.forward_entities(e.vectors, e.centers, e.radii, height, width, frame_chunk=frame_chunk)
                        for e in entities
                    ],
                    0,
                )
            else:
                if conditions is None or name not in conditions:
                    raise ValueError(f"conditioning '{self.config.conditioning}' needs conditions['{name}']")
                out = encoder(conditions[name].flatten(0, 1).to(self.dtype), frame_chunk=frame_chunk)
            total = out if total is None else total + out
        return total

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        conditions: dict[str, torch.Tensor] | None = None,
        entities: list[EntityInputs] | None = None,
        conditioning_scale: float = 1.0,
        frame_chunk: int | None = 4,
        return_dict: bool = True,
        encoded_conditions: torch.Tensor | None = None,
    ) -> ControlNetOutput | tuple:
        """
        Args:
            sample: ``(B, T, in_channels, h, w)``, the noisy latents concatenated with the image latents.
            timestep, encoder_hidden_states, added_time_ids: as for the SVD UNet.
            conditions / entities: see ``encode_conditions`` (maps at ``pixel_scale`` x the latent's size).
            conditioning_scale: multiplies every residual.
            encoded_conditions: ``encode_conditions``' output for these inputs, ``(B*T, C0, h, w)``, when the caller
                has it (generation: the maps never change over the steps, so the pipeline encodes them once);
                ``conditions`` and ``entities`` are then not read.
        """
        batch, frames = sample.shape[:2]
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], dtype=torch.float32, device=sample.device)
        elif timesteps.dim() == 0:
            timesteps = timesteps[None].to(sample.device)
        timesteps = timesteps.expand(batch)

        emb = time_embedding(self, timesteps, added_time_ids, frames, sample.dtype)
        encoder_hidden_states = encoder_hidden_states.repeat_interleave(frames, dim=0)
        h = self.conv_in(sample.flatten(0, 1))

        # the maps are at the VAE's pixel size, which the encoders reduce to the latent's
        s = self.config.pixel_scale
        cond = encoded_conditions
        if cond is None:
            cond = self.encode_conditions(conditions, entities, sample.shape[-2] * s, sample.shape[-1] * s, frames, frame_chunk)
        if cond is not None:
            h = h + cond.to(h.dtype)

        image_only_indicator = torch.zeros(batch, frames, dtype=h.dtype, device=h.device)
        h, down_res = down_blocks(self.down_blocks, h, emb, encoder_hidden_states, image_only_indicator)
        h = self.mid_block(
            hidden_states=h, temb=emb, encoder_hidden_states=encoder_hidden_states, image_only_indicator=image_only_indicator
        )

        down_out = tuple(conv(r) * conditioning_scale for conv, r in zip(self.controlnet_down_blocks, down_res))
        mid_out = self.controlnet_mid_block(h) * conditioning_scale
        if not return_dict:
            return down_out, mid_out
        return ControlNetOutput(down_block_res_samples=down_out, mid_block_res_sample=mid_out)
