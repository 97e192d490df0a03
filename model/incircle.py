"""Inscribed-circle radii of entity masks, in torch on the masks' device.

The radius is the maximum of the exact Euclidean distance transform (the distance from a mask
pixel's centre to the nearest pixel outside the mask, the frame border counting as outside):
what ``core.geometry.incircle`` gets from OpenCV, computed here without OpenCV or SciPy, which a
bare GPU machine lacks, and on the GPU when the masks are there. Separable, as Meijster et al.:
the distance to the nearest outside pixel along each column, then per row the minimum of
``g(x')^2 + (x - x')^2`` over every ``x'`` (exact; the work is ``H * W^2`` per mask crop).
"""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 2**24  # the row pass's (rows, W, W) temporaries are bounded to this many floats


def inscribed_radii(masks: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` bool masks -> ``(N,)`` float32 radii (0 for an empty mask), on the masks' device."""
    masks = torch.as_tensor(masks).bool()
    if masks.dim() == 2:
        masks = masks[None]
    return torch.stack([_radius(m) for m in masks]) if len(masks) else torch.zeros(0, device=masks.device)


def _radius(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) == 0:
        return torch.zeros((), device=mask.device)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    crop = torch.nn.functional.pad(crop, (1, 1, 1, 1))  # the frame border and the crop's edge are outside
    if crop.shape[1] > crop.shape[0]:
        crop = crop.t()  # the row pass costs H * W^2: make W the shorter side
    return edt_squared(crop).max().sqrt()


def edt_squared(mask: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` bool with ``False`` somewhere in every column -> ``(H, W)`` float32 squared distances
    from each pixel to the nearest ``False`` pixel (0 on them)."""
    h, w = mask.shape
    idx = torch.arange(h, device=mask.device)[:, None].expand(h, w)
    big = torch.full_like(idx, 4 * (h + w))
    before = torch.cummax(torch.where(~mask, idx, -big), 0).values
    after = torch.flip(torch.cummin(torch.flip(torch.where(~mask, idx, big), (0,)), 0).values, (0,))
    g2 = torch.minimum(idx - before, after - idx).float().square()  # (H, W): along the column
    x = torch.arange(w, device=mask.device, dtype=torch.float32)
    dx2 = (x[:, None] - x[None, :]).square()  # (x, x')
    rows = max(1, _CHUNK_ELEMENTS // (w * w))
    return torch.cat([(g2[i : i + rows, None, :] + dx2).amin(-1) for i in range(0, h, rows)], 0)
