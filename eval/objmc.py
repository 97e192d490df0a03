"""ObjMC: how far the entities of a generated video are from their target trajectories.

Tracking (``track_entities``). The evaluation tracks a regular grid of points over the
whole video and, per entity, keeps the track whose frame-0 position is nearest the
entity's start point (first minimum). Two grid layouts (``eval.protocol``):
``"cotracker"`` is CoTracker's ``get_points_on_a_grid`` on its interpolation shape,
mapped to the video's pixels as CoTracker's predictor maps tracks back (the official
scripts: grid 100); ``"cells"`` puts the points at the centres of equal cells (the
project's default, grid 10). The default tracker is OpenCV Lucas-Kanade
(``eval.trackers.LKTracker``); any object with ``track(frames, points)`` (e.g.
``CoTrackerTracker``) can be passed. ``add_centers=True`` (project) adds the start points
themselves to the queries, so the chosen track starts exactly there instead of up to
half a grid cell away (on a small entity, a background point); ``False`` is the
official choice. ``integer=True`` truncates the tracks to int as the official JSON files
hold them. ``official_center`` is the official start point of an entity.

Scoring (``entity_errors``, ``score``). Rules:
  * Error of a frame = Euclidean distance in pixels between predicted and
    ground-truth points, both first mapped to the evaluation resolution (the
    suite's original video size) with ``core.geometry.scale_points``.
  * Unequal lengths: only the common prefix of the two trajectories is compared
    (frame t of one with frame t of the other, t < min(len_pred, len_gt)), as the
    official script's ``zip`` does. The frames dropped are counted
    (``EntityScore.unmatched``) so a short prediction is visible, not hidden.
  * Off-frame points (negative, or beyond the frame: trackers follow points that
    leave it, and the official ground truth holds such points) are scored as given.
  * Invisible frames: a frame where the ground truth marks the entity invisible
    (``visible`` False, or a null / non-finite ground-truth point) is excluded:
    its per-frame value is NaN and it does not count. A lost or non-finite
    *predicted* point is not excluded (a lost track is a failure of the video
    or the tracker: the tracker's last position is scored). A null / non-finite
    predicted point on a counted frame cannot be scored: it is excluded and
    counted in ``EntityScore.pred_missing``, which the report lists.
  * Frame 0 counts (as in the official script), though by construction it is ~0.
  * Per entity: the mean over its counted frames (NaN if none).
  * Aggregate (official): one flat mean over all counted (video, entity, frame)
    triples = sum of all errors / number of counted triples. It is not the mean of
    per-video or per-entity means (videos with more entities weigh more).
  * A video of the ground truth absent from the predictions, or an entity absent
    from a predicted video, is reported in ``missing_items`` /
    ``missing_entities`` and does not enter the aggregate (the official script
    skipped missing videos silently; we skip them loudly). Predicted videos or
    entities unknown to the ground truth are reported in ``extra_items``.

The official trajectory JSON folders (``{entity_id: [[x, y], ...]}`` per video) are read
and written by ``tasks.evaluate``; this module is arrays only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd

from core.geometry import scale_points
from eval.protocol import COTRACKER2_INTERP_SHAPE
from eval.trackers import LKTracker

# --------------------------------------------------------------------------- tracking


def grid_points(height: int, width: int, grid_size: int) -> np.ndarray:
    """``grid_size`` x ``grid_size`` points at the centres of equal cells over the frame, (G*G, 2) x/y."""
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    xs = (np.arange(grid_size) + 0.5) * width / grid_size - 0.5
    ys = (np.arange(grid_size) + 0.5) * height / grid_size - 0.5
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def cotracker_grid(height: int, width: int, grid_size: int, interp_shape: tuple[int, int] = COTRACKER2_INTERP_SHAPE) -> np.ndarray:
    """CoTracker's query grid for a ``height`` x ``width`` video, (G*G, 2) x/y in the video's pixels, row-major.

    CoTracker lays ``linspace(m, extent - m, G)`` on each axis of its interpolation shape
    (ih, iw), with the margin m = iw / 64 on both axes (one point: the middle), and its
    predictor maps coordinates back by (W - 1) / (iw - 1) and (H - 1) / (ih - 1).
    """
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    ih, iw = interp_shape
    if grid_size == 1:
        gx, gy = np.array([iw / 2]), np.array([ih / 2])
    else:
        m = iw / 64
        gy, gx = np.meshgrid(np.linspace(m, ih - m, grid_size), np.linspace(m, iw - m, grid_size), indexing="ij")
    pts = np.stack([gx.ravel() * (width - 1) / (iw - 1), gy.ravel() * (height - 1) / (ih - 1)], axis=1)
    return pts.astype(np.float32)


def query_grid(height: int, width: int, grid_size: int, layout: str = "cells", interp_shape: tuple[int, int] = COTRACKER2_INTERP_SHAPE) -> np.ndarray:
    if layout == "cells":
        return grid_points(height, width, grid_size)
    if layout == "cotracker":
        return cotracker_grid(height, width, grid_size, interp_shape)
    raise ValueError(f"grid layout must be 'cells' or 'cotracker', got {layout!r}")


def official_center(mask: np.ndarray) -> tuple[float, float, float]:
    """The official start point of an entity: (x, y, radius) from its first-frame mask.

    ``cv2.distanceTransform(mask, DIST_L2, 5)`` on the mask as it is (not padded: OpenCV
    treats the outside of the image as foreground, so the frame border is no boundary),
    ``minMaxLoc``'s location of the first maximum in row-major order, radius ``int(max)``.
    A band of sky along the top edge gets its start at the top-left corner. (nan, nan, 0)
    for an empty mask.
    """
    m = np.asarray(mask).astype(np.uint8)
    if not m.any():
        return float("nan"), float("nan"), 0.0
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    _, max_val, _, (x, y) = cv2.minMaxLoc(dist)
    return float(x), float(y), float(int(max_val))


def track_entities(
    frames: np.ndarray,
    centers0: np.ndarray,
    tracker=None,
    grid_size: int = 10,
    add_centers: bool = True,
    layout: str = "cells",
    integer: bool = False,
    interp_shape: tuple[int, int] = COTRACKER2_INTERP_SHAPE,
) -> tuple[np.ndarray, np.ndarray]:
    """Track each entity of a video from its frame-0 start point: the grid-nearest rule.

    frames (T, H, W, 3) uint8; centers0 (E, 2) x/y at the frames' resolution.
    Returns tracks (E, T, 2) (truncated to int with ``integer``) and the tracker's validity (E, T).
    """
    frames = np.asarray(frames)
    centers0 = np.asarray(centers0, np.float32).reshape(-1, 2)
    T, H, W = frames.shape[:3]
    tracker = tracker if tracker is not None else LKTracker()
    if layout == "cotracker" and not add_centers and grid_size > 0 and hasattr(tracker, "track_grid"):
        # The official script: CoTracker lays its own grid; the nearest track is chosen by
        # its predicted frame-0 position (``pred_tracks[0][0]``).
        tracks, valid = tracker.track_grid(frames, grid_size)
        start = np.asarray(tracks[0], np.float64)
    else:
        grid = query_grid(H, W, grid_size, layout, interp_shape) if grid_size > 0 else np.zeros((0, 2), np.float32)
        queries = np.concatenate([centers0, grid], axis=0) if add_centers else grid
        if not len(queries):
            raise ValueError("nothing to track: no centres and an empty grid")
        tracks, valid = tracker.track(frames, queries)  # (T, N, 2), (T, N)
        start = np.asarray(queries, np.float64)
    d = np.linalg.norm(start[None, :, :] - centers0[:, None, :].astype(np.float64), axis=2)  # (E, N)
    nearest = d.argmin(axis=1)
    out = np.asarray(tracks, np.float64)[:, nearest].transpose(1, 0, 2)
    return (np.trunc(out) if integer else out), np.asarray(valid, bool)[:, nearest].T


def ground_truth_tracks(real_frames: np.ndarray, centers0: np.ndarray, tracker=None, **rules) -> np.ndarray:
    """The official evaluation ground truth: the same tracking run on the *real* clip, (E, T, 2).

    Mask-centre label trajectories (the incircle centre of the visible part, per
    frame) jump when an entity is partly occluded or when a stuff region changes
    shape, and no video can follow a jump; tracked ground truth is smooth and
    measured by the same tracker as the generated videos. ``rules``: those of
    ``track_entities`` (grid_size, add_centers, layout, integer).
    """
    return track_entities(real_frames, centers0, tracker, **rules)[0]


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class EntityScore:
    entity_id: str
    per_frame: np.ndarray  # (L,) error in px at eval resolution, NaN where excluded; L = common prefix
    unmatched: int  # frames of the longer trajectory beyond the common prefix
    pred_missing: int = 0  # frames the ground truth counts but the prediction has no (finite) point for

    @property
    def counted(self) -> np.ndarray:
        return np.isfinite(self.per_frame)

    @property
    def n(self) -> int:
        return int(self.counted.sum())

    @property
    def total(self) -> float:
        return float(np.nansum(self.per_frame))

    @property
    def error_px(self) -> float:
        return self.total / self.n if self.n else float("nan")


@dataclass
class ItemScore:
    item_id: str
    entities: list[EntityScore]
    missing_entities: list[str] = field(default_factory=list)
    extra_entities: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return float(sum(e.total for e in self.entities))

    @property
    def n(self) -> int:
        return int(sum(e.n for e in self.entities))

    @property
    def error_px(self) -> float:
        return self.total / self.n if self.n else float("nan")


@dataclass
class ObjMCResult:
    items: list[ItemScore]
    missing_items: list[str] = field(default_factory=list)
    extra_items: list[str] = field(default_factory=list)

    @property
    def n_pairs(self) -> int:
        return int(sum(i.n for i in self.items))

    @property
    def value(self) -> float:
        """The official aggregate: flat mean over all counted (video, entity, frame) triples."""
        n = self.n_pairs
        return float(sum(i.total for i in self.items) / n) if n else float("nan")

    @property
    def missing_entities(self) -> list[tuple[str, str]]:
        return [(i.item_id, e) for i in self.items for e in i.missing_entities]

    def sufficient(self) -> tuple[np.ndarray, np.ndarray]:
        """Per item (summed error, counted triples): what ``eval.bootstrap.bootstrap_ratio`` resamples."""
        return np.array([i.total for i in self.items]), np.array([i.n for i in self.items], np.float64)

    def summary(self) -> dict:
        """Strict-JSON summary (no NaN: a value that cannot be computed is null); every prediction
        left out is listed: missing videos and entities, null or non-finite predicted points on
        counted frames (``excluded_predictions``, with their frame counts), unequal lengths."""
        value = self.value
        return dict(
            objmc=value if np.isfinite(value) else None,
            n_pairs=self.n_pairs,
            n_items=len(self.items),
            missing_items=list(self.missing_items),
            missing_entities=[f"{i}/{e}" for i, e in self.missing_entities],
            extra_items=list(self.extra_items),
            excluded_predictions={f"{i.item_id}/{e.entity_id}": int(e.pred_missing) for i in self.items for e in i.entities if e.pred_missing},
            unmatched_frames={f"{i.item_id}/{e.entity_id}": int(e.unmatched) for i in self.items for e in i.entities if e.unmatched},
        )


def item_sums(objmc: pd.DataFrame) -> pd.DataFrame:
    """Per item of ``objmc`` table rows (``item_id``, ``per_frame``): summed error and counted (entity, frame)
    pairs, what the flat mean and its intervals resample."""
    if objmc.empty:
        return pd.DataFrame({"item_id": pd.Series(dtype=object), "total": pd.Series(dtype=float), "count": pd.Series(dtype=float)})
    per = objmc.groupby("item_id")["per_frame"].apply(lambda s: np.concatenate([np.asarray(x, float) for x in s]))
    return pd.DataFrame({"item_id": per.index, "total": per.apply(np.nansum).to_numpy(), "count": per.apply(lambda a: np.isfinite(a).sum()).to_numpy().astype(float)})


def as_points(a, what: str = "trajectory") -> np.ndarray:
    """A trajectory as (T, 2) float64; None entries (JSON null) become NaN.

    Every point must be one ``[x, y]`` pair: ``[x, y, 1]`` or a flat list is refused, never
    reshaped into other points.
    """
    if isinstance(a, np.ndarray):
        p = a.astype(np.float64)
        if p.size and (p.ndim != 2 or p.shape[1] != 2):
            raise ValueError(f"{what} has shape {p.shape}; a trajectory is (frames, 2) points [x, y]")
        return p.reshape(-1, 2)
    if isinstance(a, (str, bytes, dict)) or not hasattr(a, "__iter__"):
        raise ValueError(f"{what} is a {type(a).__name__}; a trajectory is a list of [x, y] points")
    rows = []
    for k, q in enumerate(a):
        if q is None:
            rows.append((np.nan, np.nan))
            continue
        if (not isinstance(q, (list, tuple, np.ndarray)) or len(q) != 2
                or not all(v is None or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool)) for v in q)):
            raise ValueError(f"{what}: point {k} is {str(q)[:40]}; every point is [x, y] (two numbers) or null")
        rows.append(tuple(np.nan if v is None else float(v) for v in q))
    return np.array(rows, np.float64).reshape(-1, 2)


def entity_errors(
    pred,
    gt,
    visible=None,
    pred_hw: tuple[int, int] | None = None,
    gt_hw: tuple[int, int] | None = None,
    eval_hw: tuple[int, int] | None = None,
    entity_id: str = "",
) -> EntityScore:
    """Per-frame errors of one entity (rules in the module docstring).

    Points are mapped from ``pred_hw`` / ``gt_hw`` to ``eval_hw`` when given
    (``eval_hw`` defaults to ``gt_hw``; a missing ``pred_hw`` means "same as gt").
    """
    p, g = as_points(pred), as_points(gt)
    eval_hw = eval_hw or gt_hw
    if eval_hw is not None:
        if gt_hw is not None:
            g = scale_points(g, gt_hw, eval_hw)
        src = pred_hw or gt_hw
        if src is not None:
            p = scale_points(p, src, eval_hw)
    L = min(len(p), len(g))
    vis = np.ones(len(g), bool) if visible is None else np.asarray(visible, bool).reshape(-1)
    if len(vis) != len(g):
        raise ValueError(f"entity {entity_id}: visible has {len(vis)} frames but its ground truth has {len(g)}")
    keep = vis[:L] & np.isfinite(g[:L]).all(axis=1)
    pred_ok = np.isfinite(p[:L]).all(axis=1)
    err = np.linalg.norm(p[:L] - g[:L], axis=1)
    per_frame = np.where(keep & pred_ok, err, np.nan)
    return EntityScore(str(entity_id), per_frame, abs(len(p) - len(g)), int((keep & ~pred_ok).sum()))


def score_item(
    item_id: str,
    pred: Mapping[str, object],
    gt: Mapping[str, object],
    visible: Mapping[str, object] | None = None,
    pred_hw: tuple[int, int] | None = None,
    gt_hw: tuple[int, int] | None = None,
    eval_hw: tuple[int, int] | None = None,
) -> ItemScore:
    """One video: ``pred`` and ``gt`` map entity id -> trajectory (T, 2); ids compared as strings."""
    pred = {str(k): v for k, v in pred.items()}
    gt = {str(k): v for k, v in gt.items()}
    vis = {str(k): v for k, v in (visible or {}).items()}
    ents, missing = [], []
    for eid, g in gt.items():
        if eid not in pred:
            missing.append(eid)
            continue
        ents.append(entity_errors(pred[eid], g, vis.get(eid), pred_hw, gt_hw, eval_hw, entity_id=eid))
    extra = [e for e in pred if e not in gt]
    return ItemScore(item_id, ents, missing, extra)


def score(
    pred: Mapping[str, Mapping[str, object]],
    gt: Mapping[str, Mapping[str, object]],
    visible: Mapping[str, Mapping[str, object]] | None = None,
    pred_hw: Mapping[str, tuple[int, int]] | tuple[int, int] | None = None,
    gt_hw: Mapping[str, tuple[int, int]] | tuple[int, int] | None = None,
    eval_hw: Mapping[str, tuple[int, int]] | tuple[int, int] | None = None,
) -> ObjMCResult:
    """Score many videos: dicts video_id -> {entity_id -> trajectory}.

    Sizes are one (H, W) for all videos or a dict per video id.
    """

    def size(s, vid):
        return s.get(vid) if isinstance(s, Mapping) else s

    items, missing = [], []
    for vid in sorted(gt):
        if vid not in pred:
            missing.append(vid)
            continue
        v = (visible or {}).get(vid)
        items.append(score_item(vid, pred[vid], gt[vid], v, size(pred_hw, vid), size(gt_hw, vid), size(eval_hw, vid)))
    extra = sorted(v for v in pred if v not in gt)
    return ObjMCResult(items, missing, extra)


# --------------------------------------------------------------------------- whole videos


def score_video(
    item_id: str,
    frames: np.ndarray,
    gt: np.ndarray,
    entity_ids: list | None = None,
    visible: np.ndarray | None = None,
    gt_hw: tuple[int, int] | None = None,
    eval_hw: tuple[int, int] | None = None,
    tracker=None,
    starts: np.ndarray | None = None,
    **rules,
) -> tuple[ItemScore, dict[str, np.ndarray]]:
    """Track the entities of a generated video and score them against the ground truth.

    gt (E, T, 2) at ``gt_hw`` (default: the video's size); the start points ``starts``
    (E, 2) at ``gt_hw`` (default: the ground truth's frame 0) are mapped to the video's
    size to start the tracks. Errors are measured at ``eval_hw`` (default ``gt_hw``):
    pass the suite's original video size for the official number. ``rules``: those of
    ``track_entities``. Returns the item score and the predicted trajectories (entity id
    -> (T, 2) at the video's resolution).
    """
    frames = np.asarray(frames)
    gt = np.asarray(gt, np.float64).reshape(len(gt), -1, 2)
    vid_hw = tuple(frames.shape[1:3])
    gt_hw = tuple(gt_hw) if gt_hw is not None else vid_hw
    ids = [str(e) for e in (entity_ids if entity_ids is not None else range(len(gt)))]
    centers0 = scale_points(gt[:, 0] if starts is None else np.asarray(starts, np.float64).reshape(-1, 2), gt_hw, vid_hw)
    tracks, _ = track_entities(frames, centers0, tracker, **rules)
    pred = {e: tracks[k] for k, e in enumerate(ids)}
    vis = None if visible is None else {e: np.asarray(visible)[k] for k, e in enumerate(ids)}
    item = score_item(item_id, pred, {e: gt[k] for k, e in enumerate(ids)}, vis, vid_hw, gt_hw, eval_hw or gt_hw)
    return item, pred


def format_report(result: ObjMCResult) -> str:
    """A few human-readable lines: the aggregate, then what was missing."""
    lines = [f"ObjMC {result.value:.3f} px over {result.n_pairs} (video, entity, frame) pairs in {len(result.items)} videos"]
    if result.missing_items:
        lines.append(f"missing in pred ({len(result.missing_items)} videos, not scored): {', '.join(result.missing_items)}")
    if result.missing_entities:
        lines.append("missing entities in pred: " + ", ".join(f"{i}/{e}" for i, e in result.missing_entities))
    if result.extra_items:
        lines.append(f"videos in pred but not in gt (ignored): {', '.join(result.extra_items)}")
    short = [(i.item_id, e.entity_id, e.unmatched) for i in result.items for e in i.entities if e.unmatched]
    if short:
        lines.append("trajectories of unequal length (common prefix compared): " + ", ".join(f"{i}/{e} ({n} frames)" for i, e, n in short))
    holes = [(i.item_id, e.entity_id, e.pred_missing) for i in result.items for e in i.entities if e.pred_missing]
    if holes:
        lines.append("null predicted points on visible frames (not scored): " + ", ".join(f"{i}/{e} ({n} frames)" for i, e, n in holes))
    return "\n".join(lines)


__all__ = [
    "cotracker_grid",
    "item_sums",
    "official_center",
    "query_grid",
    "EntityScore",
    "ItemScore",
    "ObjMCResult",
    "entity_errors",
    "format_report",
    "grid_points",
    "ground_truth_tracks",
    "score",
    "score_item",
    "score_video",
    "track_entities",
]
