"""The conditioning encoder: per-frame maps at pixel scale -> features at the latent's scale.

Four blocks of two 3x3 convolutions with SiLU; three of them halve the resolution (the
official code halves three times, reaching the VAE's 1/8; ``downsample=4`` halves twice,
for a VAE of factor 4), and a zero-initialised
convolution ends it, so a fresh encoder adds nothing. The entity encoder and the Gaussian
(or baseline) encoders share this shape; only the input channels differ.

The entity map is piecewise constant (an entity's vector inside its disc, zeros outside)
and the first convolution is linear, so ``forward_entities`` computes that convolution
from per-entity projected kernels ``K_k = sum_c W[:, c] e_k[c]`` applied to each entity's
disc mask (overlaps resolved by the same owner map the dense painting uses), inside a
window around the entity, and never materialises the ``T x C x H x W`` map. The result
equals ``forward(entity_maps(...))`` up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .maps import _flat_index, _radii_tn, _window, paint_owner, small_ops


class ControlEncoder(ModelMixin, ConfigMixin):
    r"""
    Parameters:
        in_channels (`int`): channels of the input map (entity vector size, 1 for a Gaussian map, ...).
        block_out_channels (`tuple[int]`): the first convolution of each of the four blocks outputs
            ``block_out_channels[i]``; the second outputs the next block's width.
        out_channels (`int`): channels of the output (the ControlNet's first feature width).
        first_stride (`int`): 1 = official layout (full-resolution first convolution); 2 = the lighter
            variant whose first convolution already halves the resolution (the halvings of the
            later blocks are unchanged except the first block's second convolution, which then keeps size).
        downsample (`int`): 8 or 4, the VAE's factor: outputs are at ``1/downsample`` of the maps.
        layout (`str`): ``project`` (the shape above), or the official network's branches, exactly
            (``official_layers``): ``official-gaussian`` (``conv_in``, a full-resolution ``c0 -> c0``
            convolution, then three [stride-2 widening, same-width] pairs ending in the stride-2 one)
            or ``official-entity`` (the same without the ``c0 -> c0`` convolution: its first convolution reads
            the entity map). Both halve three times; with ``downsample`` 4 (the tiny base) the last widening
            keeps size, the tensors' shapes unchanged.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 160,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        out_channels: int = 320,
        first_stride: int = 1,
        downsample: int = 8,
        layout: str = "project",
    ):
        super().__init__()
        if layout not in ("project", "official-gaussian", "official-entity"):
            raise ValueError(f"layout must be 'project', 'official-gaussian' or 'official-entity', got '{layout}'")
        if layout != "project" and first_stride != 1:
            raise ValueError(f"the official layout has first_stride 1, got {first_stride}")
        if len(block_out_channels) != 4:
            raise ValueError(f"block_out_channels needs 4 widths (one per block), got {block_out_channels}")
        if first_stride not in (1, 2):
            raise ValueError(f"first_stride must be 1 or 2, got {first_stride}")
        if downsample not in (4, 8):
            raise ValueError(f"downsample must be 4 or 8, got {downsample}")
        c = list(block_out_channels)
        self.conv_in = nn.Conv2d(in_channels, c[0], 3, stride=first_stride, padding=1)
        if layout != "project":
            self.body = nn.Sequential(*official_layers(c, layout == "official-gaussian", downsample))
            self._finish(c[3], out_channels)
            return
        # the halvings after conv_in, earliest first (cheapest): 3 or 2 in all, conv_in's included
        halvings = (3 if downsample == 8 else 2) - (first_stride == 2)
        strides = [2 if k < halvings else 1 for k in range(3)]
        if first_stride == 2:
            strides = [1] + strides[:2]  # the first block's second convolution keeps size
        layers: list[nn.Module] = [nn.SiLU()]
        layers += [nn.Conv2d(c[0], c[1], 3, stride=strides[0], padding=1), nn.SiLU()]
        for i in (1, 2):
            layers += [nn.Conv2d(c[i], c[i], 3, padding=1), nn.SiLU()]
            layers += [nn.Conv2d(c[i], c[i + 1], 3, stride=strides[i], padding=1), nn.SiLU()]
        layers += [nn.Conv2d(c[3], c[3], 3, padding=1), nn.SiLU()]
        layers += [nn.Conv2d(c[3], c[3], 3, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self._finish(c[3], out_channels)

    def _finish(self, width: int, out_channels: int) -> None:
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # set by ``enable_gradient_checkpointing`` on the controller (diffusers sets every submodule's flag)
        self.gradient_checkpointing = False

    @property
    def convolutions(self) -> list[nn.Conv2d]:
        """Every convolution in the order the maps go through them (``conv_in``, the body's, ``conv_out``)."""
        return [self.conv_in, *(m for m in self.body if isinstance(m, nn.Conv2d)), self.conv_out]

    def _checkpointed(self, fn, *args):
        """``fn(*args)``; under gradient checkpointing its activations are recomputed in the backward pass, so
        only the chunk's low-resolution output is kept, not its full-resolution activations."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _encode(self, maps: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.body(self.conv_in(maps)))

    def forward(self, maps: torch.Tensor, frame_chunk: int | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` maps (frames folded into the batch) -> ``(B, out, H/downsample, W/downsample)``.

        ``frame_chunk`` maps go through at a time (the encoder is per frame). Under ``no_grad`` that bounds the
        full-resolution activations to one chunk's; with gradients it takes gradient checkpointing as well
        (``gradient_checkpointing``), since backpropagation otherwise keeps every chunk's activations.
        """
        step = maps.shape[0] if not frame_chunk else frame_chunk
        return torch.cat([self._checkpointed(self._encode, maps[i : i + step]) for i in range(0, maps.shape[0], step)], 0)

    # ----------------------------------------------------------------------------------
    # the fast path: the first convolution from per-entity kernels over disc masks
    # ----------------------------------------------------------------------------------
    def first_conv_from_entities(
        self,
        vectors: torch.Tensor,
        centers: torch.Tensor,
        radii: torch.Tensor,
        height: int,
        width: int,
        owner: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``conv_in(entity_maps(vectors, centers, radii, H, W))`` without the map: ``(T, c0, H/s, W/s)``.

        vectors ``(N, C)``, centers ``(T, N, 2)``, radii ``(N,)`` or ``(T, N)``; ``owner`` is
        ``maps.paint_owner(centers, radii, H, W)`` when the caller already has it.
        """
        conv = self.conv_in
        s = conv.stride[0]
        t, n, _ = centers.shape
        w = conv.weight
        kernels = torch.einsum("ocij,nc->noij", w, vectors.to(w.dtype))  # (N, c0, 3, 3)
        ho, wo = (height - 1) // s + 1, (width - 1) // s + 1
        out = conv.bias.view(1, -1, 1, 1).to(w.dtype).expand(t, -1, ho, wo).clone()
        if owner is None:
            owner = paint_owner(centers.float(), radii, height, width)
        owner = owner.reshape(t, -1)
        r = _radii_tn(radii, t, n, centers.device)
        with small_ops():
            self._add_entity_windows(out, kernels, owner, centers, r, height, width, s)
        return out

    @staticmethod
    def _add_entity_windows(out, kernels, owner, centers, r, height, width, s: int) -> None:
        """``out (T, c0, Ho, Wo) += conv(disc mask of entity k, K_k)`` inside each entity's window (stride s)."""
        t, n = r.shape
        ho, wo = (height - 1) // s + 1, (width - 1) // s + 1
        for k in range(n):
            rk = r[:, k]
            if not bool((rk > 0).any()):
                continue
            half = int(torch.ceil(rk.clamp(min=1.0).max()))
            # window = disc + a zero margin of one pixel, origin aligned to the stride
            ys, xs, valid = _window(centers[:, k].float(), half, half, height, width, margin=1, align=s)
            mask = owner.gather(1, _flat_index(ys, xs, width, valid)).view(t, 1, ys.shape[1], xs.shape[1])
            mask = ((mask == k) & valid[:, None]).to(kernels.dtype)
            local = F.conv2d(mask, kernels[k][:, None], stride=s, padding=1)  # (T, c0, Sh/s, Sw/s)
            # add each frame's window into its place (a strided slice add, clipped to the frame)
            oy0 = torch.div(ys[:, 0], s, rounding_mode="floor").tolist()
            ox0 = torch.div(xs[:, 0], s, rounding_mode="floor").tolist()
            lh, lw = local.shape[-2:]
            for i in range(t):
                y0, x0 = max(oy0[i], 0), max(ox0[i], 0)
                y1, x1 = min(oy0[i] + lh, ho), min(ox0[i] + lw, wo)
                if y1 > y0 and x1 > x0:
                    out[i, :, y0:y1, x0:x1] += local[i, :, y0 - oy0[i] : y1 - oy0[i], x0 - ox0[i] : x1 - ox0[i]]

    def forward_entities(
        self,
        vectors: torch.Tensor,
        centers: torch.Tensor,
        radii: torch.Tensor,
        height: int,
        width: int,
        frame_chunk: int | None = 4,
    ) -> torch.Tensor:
        """Same as ``forward(entity_maps(...))`` for one video: ``(T, out, H/downsample, W/downsample)``.

        ``frame_chunk`` frames go through at a time (the encoder is per frame), so the only
        full-resolution activation alive is that of one chunk; ``None`` = all frames at once.
        With gradients that holds only under gradient checkpointing (see ``forward``).
        """
        t = centers.shape[0]
        step = t if not frame_chunk else frame_chunk
        owner = paint_owner(centers.float(), radii, height, width)
        per_frame = torch.as_tensor(radii).dim() == 2

        def chunk(vectors, c, r, own):
            h = self.first_conv_from_entities(vectors, c, r, height, width, owner=own)
            # the first SiLU in place when nothing needs its input: the full-resolution activation is the big tensor
            h = F.silu(h, inplace=not torch.is_grad_enabled())
            return self.conv_out(self.body[1:](h))

        outs = [
            self._checkpointed(chunk, vectors, centers[i : i + step], radii[i : i + step] if per_frame else radii, owner[i : i + step])
            for i in range(0, t, step)
        ]
        return torch.cat(outs, 0)


def official_layers(c: list[int], full_resolution_pair: bool, downsample: int = 8) -> list[nn.Module]:
    """The body after ``conv_in`` in the official ``ControlNetConditioningEmbeddingSVD`` (docs/method.md cites the
    lines): SiLU after every 3x3 convolution; [``c0 -> c0``]; then ``c_i -> c_{i+1}`` at stride 2 and, but for the
    last, ``c_{i+1} -> c_{i+1}``."""
    layers: list[nn.Module] = [nn.SiLU()]
    if full_resolution_pair:
        layers += [nn.Conv2d(c[0], c[0], 3, padding=1), nn.SiLU()]
    for i in range(3):
        stride = 1 if i == 2 and downsample == 4 else 2
        layers += [nn.Conv2d(c[i], c[i + 1], 3, stride=stride, padding=1), nn.SiLU()]
        if i < 2:
            layers += [nn.Conv2d(c[i + 1], c[i + 1], 3, padding=1), nn.SiLU()]
    return layers
