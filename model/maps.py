"""Per-frame conditioning maps: entity maps, 2D Gaussians, and the baseline representations.

Conventions, shared by every function here:

* ``centers``: ``(T, N, 2)`` float, the trajectory point ``(x, y)`` of each of N entities
  in each of T frames, in pixels of the map (pixel ``(row i, col j)`` sits at ``x=j, y=i``).
* ``radii``: ``(N,)`` or ``(T, N)`` float, the radius of each entity's inscribed circle.
  A radius ``<= 0`` means "absent" (padding); positive radii under 1 px are raised to 1.
* Entities are painted in the order given; where discs overlap, the later entity wins.
  Order entities large to small (``paint_order``) so the background never hides a small one.

Everything is vectorised over frames: each entity is rendered into a small window that
follows it (its bounding box plus a margin), then scattered into the frame, so the cost
grows with the entities' area, never with a Python loop over pixels.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from core.names import CONDITIONINGS  # noqa: F401 - the config's names (one list, no pydantic); maps renders each


def condition_channels(conditioning: str, entity_channels: int) -> dict[str, int]:
    """Which conditioning encoders a choice needs, and their input channels."""
    table = {
        "entity+gaussian": {"entity": entity_channels, "gaussian": 1},
        "entity": {"entity": entity_channels},
        "gaussian": {"gaussian": 1},
        "none": {},
        "point": {"point": 1},
        "trajectory": {"trajectory": 2},
        "dragnuwa-flow": {"flow": 2},
        "box": {"box": 1},
    }
    if conditioning not in table:
        raise ValueError(f"unknown conditioning '{conditioning}'; allowed: {', '.join(CONDITIONINGS)}")
    return table[conditioning]


def reads_entity_vectors(conditioning: str) -> bool:
    """Whether a conditioning reads entity vectors (so training caches them and generation extracts them)."""
    return "entity" in condition_channels(conditioning, 1)


# ---------------------------------------------------------------------------------------
# paths
# ---------------------------------------------------------------------------------------
def interpolate_path(points: np.ndarray | list, num_frames: int) -> np.ndarray:
    """A sparse user path (K, 2) -> ``num_frames`` points, monotone cubic (PCHIP) in arc length.

    The curve passes through every given point, never overshoots between them, and the
    output points are spaced evenly along it (constant speed). One point = no motion.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        raise ValueError("a path needs at least one point")
    keep = np.concatenate([[True], np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-9])
    pts = pts[keep]
    if len(pts) == 1:
        return np.repeat(pts, num_frames, axis=0).astype(np.float32)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    u = np.linspace(0.0, s[-1], num_frames)
    if len(pts) == 2:
        out = np.stack([np.interp(u, s, pts[:, 0]), np.interp(u, s, pts[:, 1])], axis=1)
    else:
        out = np.stack([pchip(s, pts[:, 0], u), pchip(s, pts[:, 1], u)], axis=1)
    return out.astype(np.float32)


def pchip(x: np.ndarray, y: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation of ``y(x)`` at ``u`` (x increasing, len >= 3), in numpy.

    Fritsch-Carlson slopes, as SciPy's ``PchipInterpolator``: the weighted harmonic mean of the
    neighbouring secants inside (zero where they differ in sign), the shape-preserving three-point
    formula at the ends. The model path needs no SciPy (a bare GPU machine has none).
    """
    h = np.diff(x)
    m = np.diff(y) / h
    d = np.zeros_like(y, dtype=np.float64)
    w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
    same = (np.sign(m[1:]) * np.sign(m[:-1])) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = (w1 + w2) / (w1 / m[:-1] + w2 / m[1:])
    d[1:-1] = np.where(same, inner, 0.0)
    d[0], d[-1] = _pchip_end(h[0], h[1], m[0], m[1]), _pchip_end(h[-1], h[-2], m[-1], m[-2])
    k = np.clip(np.searchsorted(x, u, side="right") - 1, 0, len(x) - 2)
    t = (u - x[k]) / h[k]
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * y[k] + (t3 - 2 * t2 + t) * h[k] * d[k]
            + (-2 * t3 + 3 * t2) * y[k + 1] + (t3 - t2) * h[k] * d[k + 1])


def _pchip_end(h0: float, h1: float, m0: float, m1: float) -> float:
    """The end slope of a PCHIP curve: the non-centred three-point estimate, kept monotone."""
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
        return 3 * m0
    return d


def path_for_frames(points: np.ndarray | list, num_frames: int) -> np.ndarray:
    """One point per frame: a path of exactly ``num_frames`` points is kept as given (point k is
    where the entity is in frame k, pauses and speed changes included); any other path is a
    drag, PCHIP-interpolated to ``num_frames`` points at constant speed (``interpolate_path``)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == num_frames:
        return pts.astype(np.float32)
    return interpolate_path(pts, num_frames)


def paint_order(radii: torch.Tensor) -> torch.Tensor:
    """Indices that sort entities large to small (by first-frame radius), so small ones are painted last."""
    r = radii if radii.dim() == 1 else radii[0]
    return torch.argsort(r, descending=True, stable=True)


@contextlib.contextmanager
def small_ops():
    """Run a loop of small tensor ops on one thread: they gain nothing from a parallel region,
    and on a busy machine each region's synchronisation costs milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------
# windows: a fixed-size box per entity that follows it across frames
# ---------------------------------------------------------------------------------------
def _radii_tn(radii: torch.Tensor, t: int, n: int, device=None) -> torch.Tensor:
    r = torch.as_tensor(radii, dtype=torch.float32, device=device)
    return r.expand(t, n) if r.dim() == 1 else r


def _window(center: torch.Tensor, half_h: int, half_w: int, height: int, width: int, margin: int = 0, align: int = 1):
    """Integer pixel windows around per-frame centres ``(T, 2)``.

    Returns ``ys (T, Sh)``, ``xs (T, Sw)`` (long, may lie outside the image) and ``valid (T, Sh, Sw)``.
    With ``align > 1`` the window's origin is a multiple of ``align`` (for strided convolutions).
    """
    cx = torch.floor(center[:, 0]).long()
    cy = torch.floor(center[:, 1]).long()
    y0 = cy - half_h - margin
    x0 = cx - half_w - margin
    sh = 2 * half_h + 2 + 2 * margin
    sw = 2 * half_w + 2 + 2 * margin
    if align > 1:
        y0 = y0 - torch.remainder(y0, align)
        x0 = x0 - torch.remainder(x0, align)
        sh += align - 1 + (-(sh + align - 1)) % align
        sw += align - 1 + (-(sw + align - 1)) % align
    ys = y0[:, None] + torch.arange(sh, device=center.device)
    xs = x0[:, None] + torch.arange(sw, device=center.device)
    valid = ((ys >= 0) & (ys < height))[:, :, None] & ((xs >= 0) & (xs < width))[:, None, :]
    return ys, xs, valid


def _flat_index(ys: torch.Tensor, xs: torch.Tensor, width: int, valid: torch.Tensor) -> torch.Tensor:
    """Flat ``y * W + x`` indices ``(T, Sh*Sw)``; out-of-image positions point at pixel 0 (callers zero them)."""
    idx = ys[:, :, None] * width + xs[:, None, :]
    return torch.where(valid, idx, torch.zeros_like(idx)).flatten(1)


def _offsets(ys, xs, center):
    """``dy (T, Sh, 1)``, ``dx (T, 1, Sw)``: pixel positions minus the (float) centre."""
    dy = ys.float()[:, :, None] - center[:, None, None, 1]
    dx = xs.float()[:, None, :] - center[:, None, None, 0]
    return dy, dx


# ---------------------------------------------------------------------------------------
# entity discs
# ---------------------------------------------------------------------------------------
def paint_owner(centers: torch.Tensor, radii: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(T, H, W)`` long: the index of the entity whose disc covers each pixel (later wins), -1 for none."""
    t, n, _ = centers.shape
    r = _radii_tn(radii, t, n, centers.device)
    idx_all, val_all = [], []
    with small_ops():
        _owner_windows(centers, r, height, width, idx_all, val_all)
    owner = torch.full((t, height * width), -1, dtype=torch.long, device=centers.device)
    if idx_all:  # "later wins" = the largest index among the discs covering a pixel
        owner.scatter_reduce_(1, torch.cat(idx_all, 1), torch.cat(val_all, 1), reduce="amax")
    return owner.view(t, height, width)


def _owner_windows(centers, r, height, width, idx_all, val_all) -> None:
    for k in range(centers.shape[1]):
        rk = r[:, k]
        if not bool((rk > 0).any()):
            continue
        rr = rk.clamp(min=1.0)
        half = int(math.ceil(float(rr.max())))
        ys, xs, valid = _window(centers[:, k], half, half, height, width)
        dy, dx = _offsets(ys, xs, centers[:, k])
        inside = (dy * dy + dx * dx <= (rr * rr)[:, None, None]) & valid & (rk > 0)[:, None, None]
        idx_all.append(_flat_index(ys, xs, width, valid))
        val_all.append(torch.where(inside.flatten(1), k, -1))


def entity_maps(vectors: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The dense entity map ``(T, C, H, W)``: each entity's vector painted in its disc, zeros elsewhere.

    This is the official representation, materialised; ``control_encoder.ControlEncoder.forward_entities``
    computes the encoder's output without it.
    """
    t = centers.shape[0]
    owner = paint_owner(centers, radii, height, width)
    vectors = vectors.to(centers.device)
    table = torch.cat([vectors.float(), vectors.new_zeros(1, vectors.shape[1], dtype=torch.float32)], 0).t()  # (C, N+1); -1 -> zeros
    out = torch.empty(t, vectors.shape[1], height, width, dtype=torch.float32, device=centers.device)
    for i in range(t):  # one frame at a time: the map is the only full-size allocation
        out[i] = table[:, owner[i]]
    return out


def _splat(
    centers: torch.Tensor,
    half_h: torch.Tensor,
    half_w: torch.Tensor,
    height: int,
    width: int,
    value_fn,
    channels: int = 1,
    reduce: str = "amax",
) -> torch.Tensor:
    """Render one window per entity per frame with ``value_fn(k, dy, dx) -> (T, C, Sh, Sw)`` and combine."""
    t, n, _ = centers.shape
    out = torch.zeros(t, channels, height * width, device=centers.device)
    for k in range(n):
        hh, hw = int(math.ceil(float(half_h[k]))), int(math.ceil(float(half_w[k])))
        if hh < 0 or hw < 0:
            continue
        ys, xs, valid = _window(centers[:, k], hh, hw, height, width)
        dy, dx = _offsets(ys, xs, centers[:, k])
        val = value_fn(k, dy, dx) * valid[:, None]
        idx = _flat_index(ys, xs, width, valid)[:, None].expand(-1, channels, -1)
        if reduce == "amax":
            out.scatter_reduce_(2, idx, val.flatten(2), reduce="amax")
        else:
            out.scatter_add_(2, idx, val.flatten(2))
    return out.view(t, channels, height, width)


def gaussian_maps(
    centers: torch.Tensor,
    radii: torch.Tensor,
    height: int,
    width: int,
    sigma_ratio: float = 0.4,
    support_ratio: float = 1.0,
    min_radius: float = 2.5,
) -> torch.Tensor:
    """``(T, 1, H, W)``: a 2D Gaussian (peak 1, sigma = ``sigma_ratio * r``, zero beyond ``support_ratio * r``)
    at each entity's point; the maximum where they overlap. Entities with ``r < min_radius`` are skipped
    (the official code skips boxes under 5 px)."""
    t, n, _ = centers.shape
    r = _radii_tn(radii, t, n, centers.device)
    keep = r >= min_radius
    support = (r * support_ratio).clamp(min=0)
    sigma = (r * sigma_ratio).clamp(min=1e-3)
    half = torch.where(keep, support, torch.full_like(support, -1)).amax(0)

    def value(k, dy, dx):
        d2 = dy * dy + dx * dx
        s = sigma[:, k][:, None, None]
        g = torch.exp(-d2 / (2 * s * s)) * (d2 <= (support[:, k] ** 2)[:, None, None]) * keep[:, k][:, None, None]
        return g[:, None]

    return _splat(centers, half, half, height, width, value)


def point_maps(centers: torch.Tensor, height: int, width: int, point_radius: float = 2.0) -> torch.Tensor:
    """``(T, 1, H, W)``: ones in a small disc at each entity's point (the 'point' representation)."""
    n = centers.shape[1]
    half = [float(point_radius)] * n

    def value(k, dy, dx):
        return (dy * dy + dx * dx <= point_radius**2).float()[:, None]

    return _splat(centers, half, half, height, width, value)


def _displacements(centers: torch.Tensor) -> torch.Tensor:
    """Per-frame motion ``(T, N, 2)``: point minus the previous frame's point (zero in frame 0)."""
    return torch.cat([torch.zeros_like(centers[:1]), centers[1:] - centers[:-1]], 0)


def trajectory_maps(centers: torch.Tensor, height: int, width: int, point_radius: float = 2.0) -> torch.Tensor:
    """``(T, 2, H, W)``, MotionCtrl-style: the (dx, dy) displacement since the previous frame, in pixels
    divided by the map size, painted in a small disc at each entity's point."""
    n = centers.shape[1]
    disp = _displacements(centers) / torch.tensor([width, height], dtype=torch.float32, device=centers.device)
    half = [float(point_radius)] * n

    def value(k, dy, dx):
        inside = (dy * dy + dx * dx <= point_radius**2).float()
        return inside[:, None] * disp[:, k, :, None, None]

    return _splat(centers, half, half, height, width, value, channels=2, reduce="sum")


def flow_maps(centers: torch.Tensor, height: int, width: int, sigma_ratio: float = 10 / 256) -> torch.Tensor:
    """``(T, 2, H, W)``, DragNUWA-style: the sparse per-frame displacements at the points, Gaussian-filtered
    into a dense flow (sigma = ``sigma_ratio * min(H, W)``, peak-normalised, support 3 sigma)."""
    n = centers.shape[1]
    sigma = max(sigma_ratio * min(height, width), 0.5)
    disp = _displacements(centers) / torch.tensor([width, height], dtype=torch.float32, device=centers.device)
    half = [3 * sigma] * n

    def value(k, dy, dx):
        d2 = dy * dy + dx * dx
        g = torch.exp(-d2 / (2 * sigma * sigma)) * (d2 <= (3 * sigma) ** 2)
        return g[:, None] * disp[:, k, :, None, None]

    return _splat(centers, half, half, height, width, value, channels=2, reduce="sum")


def box_maps(
    centers: torch.Tensor, radii: torch.Tensor, height: int, width: int, boxes: torch.Tensor | None = None
) -> torch.Tensor:
    """``(T, 1, H, W)``, TrailBlazer-style: each entity's first-frame box ``(x0, y0, x1, y1)`` moved with its
    point. Without boxes, the square circumscribing the inscribed circle."""
    t, n, _ = centers.shape
    r = _radii_tn(radii, t, n, centers.device)[0]
    if boxes is None:
        c0 = centers[0]
        boxes = torch.stack([c0[:, 0] - r, c0[:, 1] - r, c0[:, 0] + r, c0[:, 1] + r], 1)
    boxes = torch.as_tensor(boxes, dtype=torch.float32, device=centers.device)
    # the box relative to the entity's frame-0 point, so it follows the trajectory
    left = centers[0, :, 0] - boxes[:, 0]
    right = boxes[:, 2] - centers[0, :, 0]
    top = centers[0, :, 1] - boxes[:, 1]
    bottom = boxes[:, 3] - centers[0, :, 1]
    half_w = torch.maximum(left, right).clamp(min=0)
    half_h = torch.maximum(top, bottom).clamp(min=0)

    def value(k, dy, dx):
        inside = (dx >= -left[k]) & (dx <= right[k]) & (dy >= -top[k]) & (dy <= bottom[k])
        return inside.float()[:, None]

    return _splat(centers, half_h, half_w, height, width, value)


def render_conditions(
    conditioning: str,
    centers: torch.Tensor,
    radii: torch.Tensor,
    height: int,
    width: int,
    vectors: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
    sigma_ratio: float = 0.4,
    support_ratio: float = 1.0,
    dense_entity: bool = True,
) -> dict[str, torch.Tensor]:
    """The input maps ``{encoder name: (T, C, H, W)}`` one conditioning choice needs.

    With ``dense_entity=False`` the entity map is left out (the fast encoder path takes the
    vectors, centres and radii instead of a painted map).
    """
    names = condition_channels(conditioning, 0 if vectors is None else vectors.shape[-1])
    out: dict[str, torch.Tensor] = {}
    if "entity" in names and dense_entity:
        if vectors is None:
            raise ValueError(f"conditioning '{conditioning}' needs entity vectors")
        out["entity"] = entity_maps(vectors, centers, radii, height, width)
    if "gaussian" in names:
        out["gaussian"] = gaussian_maps(centers, radii, height, width, sigma_ratio, support_ratio)
    if "point" in names:
        out["point"] = point_maps(centers, height, width)
    if "trajectory" in names:
        out["trajectory"] = trajectory_maps(centers, height, width)
    if "flow" in names:
        out["flow"] = flow_maps(centers, height, width)
    if "box" in names:
        out["box"] = box_maps(centers, radii, height, width, boxes)
    return out


def loss_mask(centers: torch.Tensor, radii: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(T, 1, H, W)`` float: 1 inside any entity's disc (the paper's loss mask M, at any resolution)."""
    return (paint_owner(centers, radii, height, width) >= 0).float()[:, None]


def downsample_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Area-average a ``(N, H, W)`` mask to ``(N, height, width)`` (for pooling features at a coarser scale)."""
    return F.adaptive_avg_pool2d(mask.float()[:, None], (height, width))[:, 0]
