"""Reference "generators" with no model: floors and ceilings for every metric.

* ``static_video``: the first frame repeated. Nothing moves, so ObjMC equals the
  distance each entity travels: the floor any controller must beat.
* ``warp_video``: each entity's first-frame cut-out translated along its
  trajectory over the first frame (sub-pixel, bilinear, soft-edged). The tracked
  centre follows the target exactly, so ObjMC is about the tracker's own error:
  the ceiling for motion control (not for realism: cut-outs are rigid).

Pure functions on arrays: frames are (H, W, 3) uint8, trajectories x/y pixel
coordinates at the frame's resolution (pixel centres at integers).
"""

from __future__ import annotations

import cv2
import numpy as np


def static_video(first_frame: np.ndarray, n_frames: int) -> np.ndarray:
    """(T, H, W, C): the first frame repeated ``n_frames`` times."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    f = np.asarray(first_frame)
    return np.repeat(f[None], n_frames, axis=0)


def fill_background(first_frame: np.ndarray, hole: np.ndarray, radius: int = 5) -> np.ndarray:
    """The first frame with ``hole`` (H, W bool) filled by OpenCV Telea inpainting."""
    f = np.ascontiguousarray(first_frame)
    hole = np.asarray(hole, bool)
    if not hole.any():
        return f.copy()
    # Grow the hole by a pixel so the cut-out's antialiased rim does not bleed in.
    grown = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8))
    return cv2.inpaint(f, grown, radius, cv2.INPAINT_TELEA)


def warp_video(
    first_frame: np.ndarray,
    masks: np.ndarray,
    trajectories: np.ndarray,
    fill: str = "inpaint",
    max_fill_fraction: float = 0.25,
    min_motion_px: float = 0.5,
) -> np.ndarray:
    """(T, H, W, 3): entity k's cut-out moved by ``trajectories[k, t] - trajectories[k, 0]``.

    masks (E, H, W) bool, first-frame entity masks; trajectories (E, T, 2).
    Layering: larger entities are pasted first, smaller ones on top (things over
    stuff). Holes left behind: with ``fill="inpaint"`` the pixels of every entity
    that moves (more than ``min_motion_px``) and covers at most
    ``max_fill_fraction`` of the frame are inpainted in the background once;
    large regions (sky, ground: mostly background themselves) are not, their
    original pixels stay under them. ``fill="none"`` leaves the first frame.
    Non-finite trajectory points (an entity gone) hide the entity in that frame.
    """
    f0 = np.ascontiguousarray(np.asarray(first_frame, np.uint8))
    H, W = f0.shape[:2]
    masks = np.asarray(masks, bool).reshape(-1, H, W)
    traj = np.asarray(trajectories, np.float64)
    if traj.ndim != 3 or traj.shape[0] != len(masks) or traj.shape[2] != 2:
        raise ValueError(f"trajectories must be (E={len(masks)}, T, 2), got shape {traj.shape}")
    E, T = traj.shape[:2]
    if fill not in ("inpaint", "none"):
        raise ValueError(f"fill must be 'inpaint' or 'none', got {fill!r}")
    area = masks.reshape(E, -1).sum(axis=1)
    disp = traj - traj[:, :1]
    moves = np.linalg.norm(np.nan_to_num(disp, nan=0.0), axis=2).max(axis=1, initial=0.0) > min_motion_px
    gone = ~np.isfinite(traj).all(axis=2)  # (E, T)
    if fill == "inpaint":
        holes = (moves | gone.any(axis=1)) & (area <= max_fill_fraction * H * W) & (area > 0)
        background = fill_background(f0, masks[holes].any(axis=0)) if holes.any() else f0.copy()
    else:
        background = f0.copy()

    order = np.argsort(-area, kind="stable")
    img = f0.astype(np.float32)
    alphas = masks.astype(np.float32)
    out = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        canvas = background.astype(np.float32)
        for k in order:
            if area[k] == 0 or gone[k, t]:
                continue
            dx, dy = disp[k, t]
            M = np.float32([[1, 0, dx], [0, 1, dy]])
            if abs(dx) < 1e-9 and abs(dy) < 1e-9:
                a, patch = alphas[k], img
            else:
                a = cv2.warpAffine(alphas[k], M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                patch = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            canvas = canvas * (1.0 - a[..., None]) + patch * a[..., None]
        out[t] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return out


def masks_from_ids(ids0: np.ndarray, entity_ids: list[int] | np.ndarray) -> np.ndarray:
    """(E, H, W) bool masks of the given entity ids in a first-frame id map."""
    ids0 = np.asarray(ids0)
    return np.stack([ids0 == e for e in entity_ids]) if len(entity_ids) else np.zeros((0, *ids0.shape), bool)
