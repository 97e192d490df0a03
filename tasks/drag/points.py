"""Points: parsing ``X,Y`` text, clipping into the image, anchoring a path at the entity's centre."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from tasks.drag.common import DragError, Point


def parse_point(text: str, what: str = "point") -> Point:
    """``"x,y"`` -> (x, y); :class:`DragError` naming ``what`` otherwise."""
    parts = [p.strip() for p in str(text).strip().split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        if not (np.isfinite(x) and np.isfinite(y)):
            raise ValueError
    except ValueError:
        raise DragError(f"{what} {text!r} must be X,Y: two numbers separated by a comma, e.g. 120,80") from None
    return (x, y)


def parse_points(text: str, what: str = "path") -> list[Point]:
    """``"x1,y1 x2,y2 ..."`` (spaces or semicolons between points) -> a list of points."""
    tokens = [t for t in re.split(r"[\s;]+", str(text).strip()) if t]
    if not tokens:
        raise DragError(f"{what} is empty; give at least one X,Y point (several separated by spaces)")
    return [parse_point(t, f"{what}: point") for t in tokens]


def clip_points(points: np.ndarray | Sequence[Point], hw: tuple[int, int], what: str) -> tuple[np.ndarray, str | None]:
    """Points clipped into the image, and a warning when any was outside."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    H, W = hw
    outside = (p[:, 0] < 0) | (p[:, 0] > W - 1) | (p[:, 1] < 0) | (p[:, 1] > H - 1)
    if not outside.any():
        return p, None
    clipped = np.clip(p, 0, [W - 1, H - 1])
    return clipped, (
        f"{what}: {int(outside.sum())} of {len(p)} point(s) lay outside the {W}x{H} image and were moved to its edge"
    )


def anchor_path(path: np.ndarray, start: Sequence[float]) -> np.ndarray:
    """The path moved so that it begins at ``start`` (same shape and displacement)."""
    p = np.asarray(path, np.float64).reshape(-1, 2)
    return p - p[0] + np.asarray(start, np.float64)


def camera_mask(hw: tuple[int, int]) -> np.ndarray:
    """The whole-image selection: the model reads it as camera motion."""
    return np.ones(hw, bool)
