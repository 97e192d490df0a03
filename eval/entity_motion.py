"""Whole-entity motion: did every part of the entity move along its path, or only the part near the drag?

ObjMC follows one point per entity (its centre). A video that drags the pixels near the
centre and leaves the rest of the entity where it was (a "rubber sheet") scores well on
ObjMC, though the user asked for the whole entity to move. This metric tracks points
spread over the entity's first-frame mask and compares each point's displacement with
the displacement its path commands:

    d_i(t) = p_i(t) - p_i(0)                  the tracked point i of the entity
    c(t)   = path(t) - path(0)                the commanded displacement
    error  = flat mean over (entity, point, frame t >= 1) of |d_i(t) - c(t)|           px
    spread = flat ratio  sum_t rms_i |d_i(t) - mean_i d_i(t)|  /  sum_t |c(t)|       unitless

``error`` (the *entity motion error*) is 0 for a rigid translation along the path and
grows with any point that lags, overshoots or stays behind. ``spread`` (the *motion
non-uniformity*) is 0 when all points move alike, whatever the path, and about 1 when the
points' displacements differ from each other by as much as the motion itself. Both are
flat statistics over items (sums and counts per item), so the item bootstrap of ObjMC
(``eval.bootstrap.bootstrap_ratio``) gives their intervals and paired differences.

Rules, each with its reason:
- Points: a regular grid over the mask, eroded by ``margin`` px when that leaves any
  pixel (a tracking window on the boundary sees the background, which does not move:
  the default margin is half LK's default window),
  at most ``max_points`` per entity (cost), the grid step chosen to spread them evenly.
- A point is dropped from the frame its tracker loses it on (and after): a lost point
  says nothing about where the entity went.
- Frames where the entity's path is invisible, and frame 0 (where every displacement is
  0 by definition), are not counted.
- Displacements are measured at ``eval_hw`` (the suite's original video size, as ObjMC),
  mapped from the video's size and the path's size by their scale factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_MAX_POINTS = 48
DEFAULT_MARGIN_PX = 4  # half the default LK window (9 px): a window on the rim sees the still background


def mask_points(mask: np.ndarray, max_points: int = DEFAULT_MAX_POINTS, margin: int = DEFAULT_MARGIN_PX) -> np.ndarray:
    """(N, 2) x/y pixel centres on a regular grid over ``mask`` (eroded by ``margin`` when that leaves pixels)."""
    m = np.asarray(mask).astype(bool)
    if not m.any():
        return np.zeros((0, 2), np.float32)
    if margin > 0:
        eroded = cv2.erode(m.astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8), borderType=cv2.BORDER_REPLICATE)
        if eroded.any():
            m = eroded.astype(bool)
    ys, xs = np.nonzero(m)
    step = max(1, int(np.ceil(np.sqrt(len(xs) / max(max_points, 1)))))
    # The grid is anchored at the mask's bounding box, so a translated mask gets translated points.
    keep = ((xs - xs.min()) % step == 0) & ((ys - ys.min()) % step == 0)
    pts = np.stack([xs[keep], ys[keep]], axis=1).astype(np.float32)
    if len(pts) > max_points:  # a ragged mask can still exceed the cap: thin evenly
        pts = pts[np.linspace(0, len(pts) - 1, max_points).round().astype(int)]
    return pts


@dataclass(frozen=True)
class EntityMotion:
    """One entity of one video: per-frame sums, so items combine as flat means."""

    entity_id: str
    error_sum: np.ndarray  # (T,) sum over live points of |d_i(t) - c(t)|, px at eval size
    points: np.ndarray  # (T,) live points counted in error_sum
    spread: np.ndarray  # (T,) rms over live points of |d_i(t) - mean d(t)|, px; 0 where not counted
    motion: np.ndarray  # (T,) |c(t)| where counted (at least 2 live points), else 0
    n_points: int  # points seeded on the mask

    @property
    def error_px(self) -> float:
        n = self.points.sum()
        return float(self.error_sum.sum() / n) if n else float("nan")

    @property
    def non_uniformity(self) -> float:
        m = self.motion.sum()
        return float(self.spread.sum() / m) if m > 0 else float("nan")


def _scale(hw_from: tuple[int, int], hw_to: tuple[int, int]) -> np.ndarray:
    return np.array([hw_to[1] / hw_from[1], hw_to[0] / hw_from[0]], np.float64)


def entity_motion(
    frames: np.ndarray,
    masks0: np.ndarray,
    paths: np.ndarray,
    tracker,
    entity_ids: list | None = None,
    visible: np.ndarray | None = None,
    path_hw: tuple[int, int] | None = None,
    mask_hw: tuple[int, int] | None = None,
    eval_hw: tuple[int, int] | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    margin: int = DEFAULT_MARGIN_PX,
) -> list[EntityMotion]:
    """Score every entity of one generated video.

    frames (T, H, W, 3) uint8; masks0 (E, h, w) bool first-frame masks at ``mask_hw``
    (default: the video's size; resized with nearest neighbours otherwise); paths (E, T', 2)
    x/y at ``path_hw`` (default: the video's size); ``visible`` (E, T') the path's
    visibility; ``tracker`` any ``eval.trackers`` tracker (``track(frames, points)``).
    Frames beyond the shorter of the video and the path are not counted.
    """
    frames = np.asarray(frames)
    T, H, W = frames.shape[:3]
    vid_hw = (H, W)
    paths = np.asarray(paths, np.float64).reshape(len(masks0), -1, 2)
    path_hw = tuple(path_hw) if path_hw is not None else vid_hw
    eval_hw = tuple(eval_hw) if eval_hw is not None else path_hw
    ids = [str(e) for e in (entity_ids if entity_ids is not None else range(len(paths)))]
    seeds = []
    for m in masks0:
        m = np.asarray(m).astype(bool)
        if m.shape != vid_hw:
            m = cv2.resize(m.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)
        seeds.append(mask_points(m, max_points, margin))
    counts = [len(s) for s in seeds]
    L = min(T, paths.shape[1])
    out = []
    if sum(counts):
        tracks, valid = tracker.track(frames, np.concatenate(seeds, axis=0))
        tracks = np.asarray(tracks, np.float64)[:L]
        valid = np.logical_and.accumulate(np.asarray(valid, bool)[:L], axis=0)
    start = 0
    for k, eid in enumerate(ids):
        n = counts[k]
        err, pts, spread, motion = (np.zeros(L) for _ in range(4))
        if n:
            tr, va = tracks[:, start:start + n], valid[:, start:start + n]
            d = (tr - tr[:1]) * _scale(vid_hw, eval_hw)  # (L, n, 2) at eval size
            c = (paths[k, :L] - paths[k, :1]) * _scale(path_hw, eval_hw)  # (L, 2)
            vis = np.ones(L, bool) if visible is None else np.asarray(visible, bool)[k, :L]
            counted = vis & np.isfinite(c).all(axis=1)
            counted[0] = False
            for t in np.nonzero(counted)[0]:
                live = va[t]
                if not live.any():
                    continue
                dt = d[t, live]
                err[t] = np.linalg.norm(dt - c[t], axis=1).sum()
                pts[t] = live.sum()
                if live.sum() >= 2:
                    spread[t] = np.sqrt((np.linalg.norm(dt - dt.mean(axis=0), axis=1) ** 2).mean())
                    motion[t] = np.linalg.norm(c[t])
        start += n
        out.append(EntityMotion(eid, err, pts, spread, motion, n))
    return out


def item_sums(entities: list[EntityMotion]) -> dict[str, float]:
    """One video's sufficient statistics: what the flat means and their item bootstrap resample."""
    return dict(
        error_sum=float(sum(e.error_sum.sum() for e in entities)),
        points=float(sum(e.points.sum() for e in entities)),
        spread_sum=float(sum(e.spread.sum() for e in entities)),
        motion_sum=float(sum(e.motion.sum() for e in entities)),
    )
