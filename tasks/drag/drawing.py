"""Drawing: the page's clickable image and the CLI's preview (masks, clicks, paths, PCHIP trajectories)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from core.geometry import rescale
from tasks.drag.case import DragCase
from tasks.drag.common import Point, color

NEGATIVE_COLOR = (230, 30, 30)


@dataclass
class Overlay:
    """One entity as drawn over the image; every field optional (the page draws partial entities)."""

    mask: np.ndarray | None = None
    positive: Sequence[Point] = ()
    negative: Sequence[Point] = ()
    path: Sequence[Point] = ()
    trajectory: np.ndarray | None = None  # (K, 2) the model's path (drawn through PCHIP)
    camera: bool = False
    active: bool = False


def _to_display(p, f: float) -> tuple[int, int]:
    x, y = rescale(np.asarray(p, np.float64), f)
    return int(round(x)), int(round(y))


def render_overlay(image: np.ndarray, overlays: Sequence[Overlay], width: int | None = None, curve_points: int = 64) -> np.ndarray:
    """The image (resized to ``width``) with masks tinted, clicks, drawn paths and PCHIP trajectories."""
    from model.maps import interpolate_path

    H, W = image.shape[:2]
    width = int(width or W)
    f = width / W
    dh = max(1, int(round(H * f)))
    base = cv2.resize(image, (width, dh), interpolation=cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA) if f != 1 else image.copy()
    out = base.astype(np.float32)
    thick = max(1, int(round(width / 320)))
    for k, ov in enumerate(overlays):
        if ov.mask is None or ov.camera:
            continue
        col = np.array(color(k), np.float32)
        m = cv2.resize(ov.mask.astype(np.uint8), (width, dh), interpolation=cv2.INTER_NEAREST).astype(bool)
        out[m] = 0.55 * out[m] + 0.45 * col
    out = np.clip(out, 0, 255).astype(np.uint8)
    for k, ov in enumerate(overlays):
        col = tuple(int(c) for c in color(k))
        if ov.camera:
            cv2.rectangle(out, (thick, thick), (width - 1 - thick, dh - 1 - thick), col, 2 * thick + (2 if ov.active else 0))
            cv2.putText(out, f"{k + 1}: camera", (6 * thick + 4, 16 * thick + 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thick, col, thick, cv2.LINE_AA)
        elif ov.mask is not None:
            m = cv2.resize(ov.mask.astype(np.uint8), (width, dh), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            if ov.active:
                cv2.drawContours(out, contours, -1, (255, 255, 255), 3 * thick, cv2.LINE_AA)
            cv2.drawContours(out, contours, -1, col, thick + (1 if ov.active else 0), cv2.LINE_AA)
        for p in ov.positive:
            c = _to_display(p, f)
            cv2.circle(out, c, 4 * thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, c, 3 * thick, col, -1, cv2.LINE_AA)
        for p in ov.negative:
            x, y = _to_display(p, f)
            d = 3 * thick + 1
            cv2.line(out, (x - d, y - d), (x + d, y + d), NEGATIVE_COLOR, 2 * thick, cv2.LINE_AA)
            cv2.line(out, (x - d, y + d), (x + d, y - d), NEGATIVE_COLOR, 2 * thick, cv2.LINE_AA)
        for p in ov.path:  # the clicks as drawn: hollow rings
            cv2.circle(out, _to_display(p, f), 3 * thick, col, thick, cv2.LINE_AA)
        if ov.trajectory is not None and len(ov.trajectory):
            traj = np.asarray(ov.trajectory, np.float64).reshape(-1, 2)
            curve = interpolate_path(traj, curve_points) if len(traj) > 1 else traj
            pts = np.array([_to_display(p, f) for p in curve], np.int32)
            if len(pts) > 1:
                cv2.polylines(out, [pts.reshape(-1, 1, 2)], False, (255, 255, 255), 2 * thick + 2, cv2.LINE_AA)
                cv2.polylines(out, [pts.reshape(-1, 1, 2)], False, col, 2 * thick, cv2.LINE_AA)
                tail = pts[max(0, len(pts) - 6)]
                if tuple(tail) != tuple(pts[-1]):
                    cv2.arrowedLine(out, tuple(int(v) for v in tail), tuple(int(v) for v in pts[-1]), col, 2 * thick, cv2.LINE_AA, tipLength=0.6)
            start = pts[0]
            cv2.circle(out, (int(start[0]), int(start[1])), 4 * thick, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, (int(start[0]), int(start[1])), 3 * thick, col, -1, cv2.LINE_AA)
            cv2.putText(out, str(k + 1), (int(start[0]) + 5 * thick, int(start[1]) - 5 * thick), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45 * thick + 0.1, (255, 255, 255), thick + 1, cv2.LINE_AA)
    return out


def case_overlays(case: DragCase, active: int | None = None) -> list[Overlay]:
    return [Overlay(e.mask, (), (), [tuple(p) for p in e.path], e.trajectory, e.camera, k == active) for k, e in enumerate(case.entities)]


def heat_rgb(gauss: np.ndarray) -> np.ndarray:
    """A [0, 1] map as an RGB heat image."""
    g = (np.clip(gauss, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(g, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
