"""Point trackers: OpenCV pyramidal Lucas-Kanade (default) and CoTracker (local checkout).

A tracker maps frames (T, H, W, 3) uint8 and query points (N, 2) in frame 0 to
tracks (T, N, 2) and a per-frame validity (T, N). Both are plain functions of arrays.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.config import LKTracker as LKSettings
from core.config import TrackerSettings


def _gray(frames: np.ndarray) -> list[np.ndarray]:
    return [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) if f.ndim == 3 else f for f in frames]


@dataclass(frozen=True)
class LKTracker:
    """Frame-to-frame pyramidal LK; a point dies when its forward-backward error exceeds the threshold."""

    win_size: int = LKSettings().win_size  # the defaults are the config's (one home)
    max_level: int = LKSettings().max_level
    fb_threshold_px: float = LKSettings().fb_threshold_px
    name: str = "lk"

    def track(self, frames: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grays = _gray(frames)
        T, N = len(grays), len(points)
        H, W = grays[0].shape
        tracks = np.zeros((T, N, 2), np.float32)
        valid = np.zeros((T, N), bool)
        tracks[0] = points
        valid[0] = True
        params = dict(
            winSize=(self.win_size, self.win_size),
            maxLevel=self.max_level,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
        )
        for t in range(1, T):
            prev = tracks[t - 1].reshape(-1, 1, 2).astype(np.float32)
            alive = valid[t - 1].copy()
            if not alive.any():
                tracks[t] = tracks[t - 1]
                continue
            # Constant-velocity guess: fast entities stay inside the pyramid's reach.
            guess = tracks[t - 1] + (tracks[t - 1] - tracks[t - 2] if t >= 2 else 0.0)
            nxt, st, _ = cv2.calcOpticalFlowPyrLK(
                grays[t - 1], grays[t], prev, guess.reshape(-1, 1, 2).astype(np.float32), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **params
            )
            # The backward pass gets the same motion prior, reversed.
            back_guess = nxt - (guess.reshape(-1, 1, 2) - prev)
            back, st_b, _ = cv2.calcOpticalFlowPyrLK(
                grays[t], grays[t - 1], nxt, back_guess.astype(np.float32), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **params
            )
            fb = np.linalg.norm(back.reshape(-1, 2) - prev.reshape(-1, 2), axis=1)
            nxt = nxt.reshape(-1, 2)
            inside = (nxt[:, 0] >= 0) & (nxt[:, 0] <= W - 1) & (nxt[:, 1] >= 0) & (nxt[:, 1] <= H - 1)
            ok = alive & (st.ravel() == 1) & (st_b.ravel() == 1) & (fb < self.fb_threshold_px) & inside
            tracks[t] = np.where(ok[:, None], nxt, tracks[t - 1])
            valid[t] = ok
        return tracks, valid


class CoTrackerTracker:
    """CoTracker from a local checkout and checkpoint (it is not on PyPI; nothing downloads)."""

    name = "cotracker"

    def __init__(self, repo_path: str | None, checkpoint: str | None, device: str = "cpu"):
        repo = Path(repo_path) if repo_path else None
        ckpt = Path(checkpoint) if checkpoint else None
        if repo is None or not (repo / "cotracker").is_dir():
            raise FileNotFoundError(
                f"CoTracker checkout not found at {repo_path!r} (looked for its 'cotracker' package there); "
                "clone https://github.com/facebookresearch/co-tracker and set labels.tracker.cotracker.repo_path, or use tracker kind 'lk'"
            )
        if ckpt is None or not ckpt.is_file():
            raise FileNotFoundError(
                f"CoTracker checkpoint not found at {checkpoint!r}; download a CoTracker2/3 offline checkpoint "
                "(e.g. scaled_offline.pth) and set labels.tracker.cotracker.checkpoint, or use tracker kind 'lk'"
            )
        if str(repo) not in sys.path:
            sys.path.insert(0, str(repo))
        from cotracker.predictor import CoTrackerPredictor  # type: ignore[import-not-found]

        self.device = device
        self.model = CoTrackerPredictor(checkpoint=str(ckpt)).to(device).eval()

    def track(self, frames: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[None].float().to(self.device)
        q = np.concatenate([np.zeros((len(points), 1)), points], axis=1)
        queries = torch.from_numpy(q).float()[None].to(self.device)
        with torch.no_grad():
            tracks, vis = self.model(video, queries=queries)
        return tracks[0].cpu().numpy(), vis[0].cpu().numpy().astype(bool)

    def track_grid(self, frames: np.ndarray, grid_size: int) -> tuple[np.ndarray, np.ndarray]:
        """CoTracker as the official ``Generate_Trajectory_for_VIPSeg.py`` calls it: its own
        ``grid_size`` grid from frame 0 (no query points, so no support grid is added), forward
        only, on BGR frames (the script reads them with ``cv2.imread``), every frame given.
        ``frames`` are RGB (T, H, W, 3) uint8; returns tracks (T, G*G, 2) and visibility."""
        import torch

        bgr = np.ascontiguousarray(np.asarray(frames)[..., ::-1])
        video = torch.from_numpy(bgr).permute(0, 3, 1, 2)[None].float().to(self.device)
        with torch.no_grad():
            tracks, vis = self.model(video, grid_size=int(grid_size), grid_query_frame=0, backward_tracking=False)
        return tracks[0].cpu().numpy(), vis[0].cpu().numpy().astype(bool)


def make_tracker(kind: str, lk: dict | None = None, cotracker: dict | None = None) -> LKTracker | CoTrackerTracker:
    if kind == "lk":
        s = LKSettings(**(lk or {}))
        return LKTracker(s.win_size, s.max_level, s.fb_threshold_px)
    if kind == "cotracker":
        c = cotracker or {}
        return CoTrackerTracker(c.get("repo_path"), c.get("checkpoint"))
    raise ValueError(f"tracker kind must be 'lk' or 'cotracker', got {kind!r}")


def tracker_for(t: TrackerSettings) -> LKTracker | CoTrackerTracker:
    """The point tracker a ``TrackerSettings`` section (labels.tracker, evaluate.tracker) asks for."""
    return make_tracker(t.kind, t.lk.model_dump(), t.cotracker.model_dump())


def seed_points(mask0: np.ndarray, center: tuple[float, float], radius: float, step: int) -> np.ndarray:
    """The centre plus grid points inside the inner part of the incircle (clear of the boundary)."""
    cx, cy = center
    reach = max(radius * 0.7, 0.0)
    offs = np.arange(-reach, reach + 1e-6, step) if reach >= step else np.zeros(1)
    gx, gy = np.meshgrid(offs, offs)
    pts = np.stack([gx.ravel() + cx, gy.ravel() + cy], axis=1)
    pts = pts[np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) <= reach + 1e-6]
    H, W = mask0.shape
    ix = np.clip(np.round(pts[:, 0]).astype(int), 0, W - 1)
    iy = np.clip(np.round(pts[:, 1]).astype(int), 0, H - 1)
    pts = pts[mask0[iy, ix]]
    if not len(pts) or not np.any(np.all(np.isclose(pts, [cx, cy]), axis=1)):
        pts = np.concatenate([[[cx, cy]], pts], axis=0)
    return pts.astype(np.float32)


def track_center(
    tracker: LKTracker | CoTrackerTracker,
    frames: np.ndarray,
    seeds: list[np.ndarray],
    min_points: int,
    ids: np.ndarray | None = None,
    entity_ids: list[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Track several entities' centres at once: centre_t = centre_0 + median displacement of its live seeds.

    ``seeds[k]`` is (n_k, 2) with the centre first. With panoptic ``ids`` (T, H, W),
    a point dies once it lands off its entity (it is occluded, or the tracker slid
    onto what covers it). Returns centres (E, T, 2) and live (E, T).
    """
    allpts = np.concatenate(seeds, axis=0)
    tracks, valid = tracker.track(frames, allpts)
    T = len(frames)
    if ids is not None and entity_ids is not None:
        owner = np.repeat(np.asarray(entity_ids), [len(s) for s in seeds])
        H, W = ids.shape[1:]
        ix = np.clip(np.round(tracks[..., 0]).astype(int), 0, W - 1)
        iy = np.clip(np.round(tracks[..., 1]).astype(int), 0, H - 1)
        on_entity = ids[np.arange(T)[:, None], iy, ix] == owner[None]
        valid = np.logical_and.accumulate(valid & on_entity, axis=0)
    centers = np.zeros((len(seeds), T, 2), np.float64)
    live = np.zeros((len(seeds), T), bool)
    start = 0
    for k, s in enumerate(seeds):
        sl = slice(start, start + len(s))
        start += len(s)
        tr, va = tracks[:, sl], valid[:, sl]
        need = min(min_points, len(s))
        last = s[0].astype(np.float64)
        for t in range(T):
            if va[t].sum() >= need:
                last = s[0] + np.median(tr[t][va[t]] - s[va[t]], axis=0)
                live[k, t] = True
            centers[k, t] = last
    return centers, live
