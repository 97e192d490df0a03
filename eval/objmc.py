"""ObjMC: how far the entities of a generated video are from their target trajectories.

Tracking (``track_entities``). The official evaluation tracks a regular grid of
points over the whole generated video (CoTracker2, ``grid_size`` 10) and, per
entity, keeps the track whose frame-0 position is nearest the entity's frame-0
incircle centre. We do the same; the default tracker is OpenCV Lucas-Kanade
(``eval.trackers.LKTracker``), any object with ``track(frames, points)`` (e.g.
``CoTrackerTracker``) can be passed. ``add_centers=True`` (our default) adds the
centres themselves to the query points, so the chosen track starts exactly at the
centre instead of up to half a grid cell away (which on a small entity can be a
background point); ``add_centers=False`` reproduces the official choice.

Scoring (``entity_errors``, ``score``). Rules:
  * Error of a frame = Euclidean distance in pixels between predicted and
    ground-truth points, both first mapped to the evaluation resolution (the
    suite's original video size) with ``core.geometry.scale_points``.
  * Unequal lengths: only the common prefix of the two trajectories is compared
    (frame t of one with frame t of the other, t < min(len_pred, len_gt)), as the
    official script's ``zip`` does. The frames dropped are counted
    (``EntityScore.unmatched``) so a short prediction is visible, not hidden.
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

Official JSON format (``read_trajectory_dir`` / ``write_trajectory_dir``): one file
``<video_id>.json`` per video holding ``{entity_id: [[x, y], ...]}`` (pixel
coordinates, one point per frame). Extension: a point may be ``null`` for a frame
where the entity is invisible (written only for ground truth with visibility).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.geometry import scale_points
from eval.trackers import LKTracker

OFFICIAL_GRID_SIZE = 10

# --------------------------------------------------------------------------- tracking


def grid_points(height: int, width: int, grid_size: int) -> np.ndarray:
    """``grid_size`` x ``grid_size`` points at the centres of equal cells over the frame, (G*G, 2) x/y."""
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    xs = (np.arange(grid_size) + 0.5) * width / grid_size - 0.5
    ys = (np.arange(grid_size) + 0.5) * height / grid_size - 0.5
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def track_entities(
    frames: np.ndarray,
    centers0: np.ndarray,
    tracker=None,
    grid_size: int = OFFICIAL_GRID_SIZE,
    add_centers: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Track each entity of a video from its frame-0 centre; the official grid-nearest rule.

    frames (T, H, W, 3) uint8; centers0 (E, 2) x/y at the frames' resolution.
    Returns tracks (E, T, 2) and the tracker's validity (E, T).
    """
    frames = np.asarray(frames)
    centers0 = np.asarray(centers0, np.float32).reshape(-1, 2)
    T, H, W = frames.shape[:3]
    tracker = tracker if tracker is not None else LKTracker()
    grid = grid_points(H, W, grid_size) if grid_size > 0 else np.zeros((0, 2), np.float32)
    queries = np.concatenate([centers0, grid], axis=0) if add_centers else grid
    if not len(queries):
        raise ValueError("nothing to track: no centres and an empty grid")
    tracks, valid = tracker.track(frames, queries)  # (T, N, 2), (T, N)
    start = np.asarray(queries, np.float64)
    d = np.linalg.norm(start[None, :, :] - centers0[:, None, :].astype(np.float64), axis=2)  # (E, N)
    nearest = d.argmin(axis=1)
    return np.asarray(tracks, np.float64)[:, nearest].transpose(1, 0, 2), np.asarray(valid, bool)[:, nearest].T


def ground_truth_tracks(
    real_frames: np.ndarray,
    centers0: np.ndarray,
    tracker=None,
    grid_size: int = OFFICIAL_GRID_SIZE,
    add_centers: bool = True,
) -> np.ndarray:
    """The official evaluation ground truth: the same tracking run on the *real* clip, (E, T, 2).

    Mask-centre label trajectories (the incircle centre of the visible part, per
    frame) jump when an entity is partly occluded or when a stuff region changes
    shape, and no video can follow a jump; tracked ground truth is smooth and
    measured by the same tracker as the generated videos.
    """
    return track_entities(real_frames, centers0, tracker, grid_size, add_centers)[0]


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

    def rows(self, checkpoint_id: str, suite: str, tracker: str) -> list[dict]:
        """Rows of the ``objmc`` table (entity ids must be integers there)."""
        return [
            dict(
                checkpoint_id=checkpoint_id,
                suite=suite,
                item_id=item.item_id,
                entity_id=int(e.entity_id),
                error_px=e.error_px,
                per_frame=[float(v) for v in e.per_frame],
                tracker=tracker,
            )
            for item in self.items
            for e in item.entities
        ]

    def summary(self) -> dict:
        return dict(
            objmc=self.value,
            n_pairs=self.n_pairs,
            n_items=len(self.items),
            missing_items=list(self.missing_items),
            missing_entities=[f"{i}/{e}" for i, e in self.missing_entities],
            extra_items=list(self.extra_items),
        )


def _as_points(a) -> np.ndarray:
    """A trajectory as (T, 2) float64; None entries (JSON null) become NaN."""
    if isinstance(a, np.ndarray):
        p = a.astype(np.float64)
    else:
        p = np.array([[np.nan, np.nan] if q is None else q for q in a], np.float64)
    return p.reshape(-1, 2)


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
    p, g = _as_points(pred), _as_points(gt)
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
    grid_size: int = OFFICIAL_GRID_SIZE,
    add_centers: bool = True,
) -> tuple[ItemScore, dict[str, np.ndarray]]:
    """Track the entities of a generated video and score them against the ground truth.

    gt (E, T, 2) at ``gt_hw`` (default: the video's size); frame-0 centres
    ``gt[:, 0]`` are mapped to the video's size to start the tracks. Errors are
    measured at ``eval_hw`` (default ``gt_hw``): pass the suite's original
    video size for the official number. Returns the item score and the predicted
    trajectories (entity id -> (T, 2) at the video's resolution, ready for
    ``write_trajectory_dir``).
    """
    frames = np.asarray(frames)
    gt = np.asarray(gt, np.float64).reshape(len(gt), -1, 2)
    vid_hw = tuple(frames.shape[1:3])
    gt_hw = tuple(gt_hw) if gt_hw is not None else vid_hw
    ids = [str(e) for e in (entity_ids if entity_ids is not None else range(len(gt)))]
    centers0 = scale_points(gt[:, 0], gt_hw, vid_hw)
    tracks, _ = track_entities(frames, centers0, tracker, grid_size, add_centers)
    pred = {e: tracks[k] for k, e in enumerate(ids)}
    vis = None if visible is None else {e: np.asarray(visible)[k] for k, e in enumerate(ids)}
    item = score_item(item_id, pred, {e: gt[k] for k, e in enumerate(ids)}, vis, vid_hw, gt_hw, eval_hw or gt_hw)
    return item, pred


# --------------------------------------------------------------------------- official JSON


def _finite_or_none(p: np.ndarray) -> list | None:
    return [float(p[0]), float(p[1])] if np.all(np.isfinite(p)) else None


def write_trajectories(path: str | Path, trajectories: Mapping[str, object], visible: Mapping[str, object] | None = None) -> None:
    """One video's file: ``{entity_id: [[x, y], ...]}``; invisible (or non-finite) points as null."""
    vis = {str(k): v for k, v in (visible or {}).items()}
    out = {}
    for eid, traj in trajectories.items():
        p = _as_points(traj)
        v = np.asarray(vis[str(eid)], bool) if str(eid) in vis else np.ones(len(p), bool)
        if len(v) != len(p):
            raise ValueError(f"{path}: entity {eid} has {len(p)} points but {len(v)} visibility flags")
        out[str(eid)] = [_finite_or_none(q) if ok else None for q, ok in zip(p, v)]
    Path(path).write_text(json.dumps(out))


def read_trajectories(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One video's file -> (entity id -> (T, 2) with NaN for null points, entity id -> visible (T,))."""
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected an object {{entity_id: [[x, y], ...]}}, got {type(raw).__name__}")
    traj, vis = {}, {}
    for eid, pts in raw.items():
        p = _as_points(pts)
        traj[str(eid)] = p
        vis[str(eid)] = np.isfinite(p).all(axis=1)
    return traj, vis


def write_trajectory_dir(
    directory: str | Path,
    videos: Mapping[str, Mapping[str, object]],
    visible: Mapping[str, Mapping[str, object]] | None = None,
) -> list[Path]:
    """Write ``<directory>/<video_id>.json`` per video; returns the paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for vid, ents in videos.items():
        p = d / f"{vid}.json"
        write_trajectories(p, ents, (visible or {}).get(vid))
        paths.append(p)
    return paths


def read_trajectory_dir(directory: str | Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """All ``*.json`` of a directory -> (video_id -> trajectories, video_id -> visibility)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"trajectory directory {d} does not exist")
    trajs, vis = {}, {}
    for p in sorted(d.glob("*.json")):
        trajs[p.stem], vis[p.stem] = read_trajectories(p)
    return trajs, vis


def score_dirs(
    gt_dir: str | Path,
    pred_dir: str | Path,
    pred_hw: tuple[int, int] | None = None,
    gt_hw: tuple[int, int] | None = None,
    eval_hw: tuple[int, int] | None = None,
) -> ObjMCResult:
    """``--gt DIR --pred DIR``: score every ground-truth video; null GT points are invisible frames.

    Without sizes both directories are taken to be at the evaluation resolution
    (the official script's assumption).
    """
    gt, vis = read_trajectory_dir(gt_dir)
    pred, _ = read_trajectory_dir(pred_dir)
    if not gt:
        raise FileNotFoundError(f"no *.json trajectory files in the ground-truth directory {gt_dir}")
    return score(pred, gt, vis, pred_hw, gt_hw, eval_hw)


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
    "OFFICIAL_GRID_SIZE",
    "EntityScore",
    "ItemScore",
    "ObjMCResult",
    "entity_errors",
    "format_report",
    "grid_points",
    "ground_truth_tracks",
    "read_trajectories",
    "read_trajectory_dir",
    "score",
    "score_dirs",
    "score_item",
    "score_video",
    "track_entities",
    "write_trajectories",
    "write_trajectory_dir",
]
