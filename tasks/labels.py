"""The labels stage's unit of work: one video in, label rows (or a reject) out.

Plain functions: callable without Prefect or Ray. ``label_videos`` is what a Ray
task runs for a chunk of videos; a bad video becomes a reject row, never an
exception that stops the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.config import LabelsSettings
from core.geometry import incircles
from core.media import frames_cache_path, save_cached_clip
from core.paths import printable
from core.rejects import is_infrastructure_error, reject_row
from core.tables import Workdir
from core.vipseg import Category, VideoError, decode_ids, list_video, read_frame, read_mask
from eval.trackers import seed_points, track_center, tracker_for

STAGE = "labels"


@dataclass(frozen=True)
class VideoRef:
    dataset: str
    split: str
    video_id: str

    @property
    def item(self) -> str:
        return printable(f"{self.dataset}/{self.split}/{self.video_id}")  # a name that was not UTF-8 still makes a row


def load_clip(root: Path, video_id: str, cfg: LabelsSettings, categories: dict[int, Category] | None = None
              ) -> tuple[np.ndarray, np.ndarray, list[int], tuple[int, int]]:
    """Sampled frames (T, h, w, 3) and panoptic ids (T, h, w) at label resolution.

    Returns frames, ids, the original frame indices and the original (H, W). Every
    file's header is checked against ``labels.max_frame_pixels`` before it is decoded.
    """
    files = list_video(root, video_id)
    need = cfg.frames.needed()
    if len(files.frames) < need:
        raise VideoError(
            f"video has {len(files.frames)} frames but labels.frames (start {cfg.frames.start}, count {cfg.frames.count}, "
            f"stride {cfg.frames.stride}) needs {need}; lower labels.frames.count or stride, or drop the video"
        )
    idx = cfg.frames.indices()
    h, w = cfg.resolution
    frames, ids, orig = [], [], None
    for i in idx:
        f = read_frame(files.frames[i], cfg.max_frame_pixels)
        m = read_mask(files.masks[i], cfg.max_frame_pixels, categories)
        if f.shape[:2] != m.shape:
            raise VideoError(
                f"mask {files.masks[i].name} is {m.shape[0]}x{m.shape[1]} but its frame is {f.shape[0]}x{f.shape[1]}; "
                "re-export the mask at the frame's size"
            )
        if orig is None:
            orig = f.shape[:2]
        elif f.shape[:2] != orig:
            raise VideoError(f"frame {files.frames[i].name} is {f.shape[0]}x{f.shape[1]} but the first frame is {orig[0]}x{orig[1]}; all frames of a video must share one size")
        frames.append(cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) if f.shape[:2] != (h, w) else f)
        ids.append(cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST_EXACT) if m.shape != (h, w) else m)
    assert orig is not None
    return np.stack(frames), np.stack(ids), idx, orig


def first_frame_entities(ids0: np.ndarray, cfg: LabelsSettings) -> np.ndarray:
    values, counts = np.unique(ids0, return_counts=True)
    keep = counts >= cfg.min_area_px
    if not cfg.include_void:
        keep &= values != 0
    return values[keep]


def label_video(
    root: Path,
    ref: VideoRef,
    cfg: LabelsSettings,
    categories: dict[int, Category],
    tracker=None,
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Label rows for every first-frame entity, plus the clip (frames, ids) they describe."""
    frames, ids, frame_idx, (H, W) = load_clip(root, ref.video_id, cfg, categories)
    entities = first_frame_entities(ids[0], cfg)
    if len(entities) == 0:
        raise VideoError(
            f"no entity of at least {cfg.min_area_px} px in the first sampled frame (the mask is void there); "
            "check the panoptic masks, or lower labels.min_area_px"
        )
    T = len(frames)
    centers = np.zeros((T, len(entities), 2))
    radii = np.zeros((T, len(entities)))
    areas = np.zeros((T, len(entities)), np.int64)
    for t in range(T):
        centers[t], radii[t], areas[t] = incircles(ids[t], entities)
    visible = areas > 0

    if cfg.trajectory_source == "tracker":
        lk = cfg.tracker.lk
        seeds = [seed_points(ids[0] == e, centers[0, k], radii[0, k], lk.grid_step_px) for k, e in enumerate(entities)]
        tracked, live = track_center(tracker, frames, seeds, lk.min_points, ids, entities)
        centers = tracked.transpose(1, 0, 2)
        visible &= live.T
    else:
        # Absent frames keep the last seen centre and radius (flagged invisible).
        for t in range(1, T):
            gone = ~visible[t]
            centers[t, gone] = centers[t - 1, gone]
            radii[t, gone] = radii[t - 1, gone]

    cat, _, thing = decode_ids(entities)
    rows = []
    for k, e in enumerate(entities):
        c = categories.get(int(cat[k]))
        rows.append(
            dict(
                dataset=ref.dataset,
                split=ref.split,
                video_id=ref.video_id,
                entity_id=int(e),
                category_id=int(cat[k]),
                category=c.name if c else None,
                is_thing=bool(thing[k]),
                frame_indices=[int(i) for i in frame_idx],
                centers=centers[:, k].astype(np.float32).tolist(),
                radii=radii[:, k].astype(np.float32).tolist(),
                visible=visible[:, k].tolist(),
                area_px=areas[:, k].astype(np.int32).tolist(),
                trajectory_source=cfg.trajectory_source if cfg.trajectory_source == "mask-center" else f"tracker:{cfg.tracker.kind}",
                height=int(ids.shape[1]),
                width=int(ids.shape[2]),
                orig_height=int(H),
                orig_width=int(W),
                frames_path=None,
                config_digest=cfg.digest(),
            )
        )
    return rows, frames, ids


def label_videos(
    root: str,
    refs: list[VideoRef],
    cfg: LabelsSettings,
    categories: dict[int, Category],
    workdir_url: str,
) -> tuple[list[dict], list[dict]]:
    """A chunk of videos -> (label rows, reject rows). Writes each clip to the frames cache."""
    wd = Workdir(workdir_url)
    tracker = None
    if cfg.trajectory_source == "tracker":
        tracker = tracker_for(cfg.tracker)
    rows, rejects, digest = [], [], cfg.digest()
    hint = "check this video's files, or drop it from the split file (a re-run with --retry-rejects tries it again)"
    for ref in dict.fromkeys(refs):  # a video listed twice is labelled once
        try:
            video_rows, frames, ids = label_video(Path(root), ref, cfg, categories, tracker)
            rel = frames_cache_path(ref.dataset, ref.split, ref.video_id) if cfg.frames_cache else None
            if rel:
                wd.path(rel)  # the cache path stays inside the workdir, or the video is rejected
        except Exception as err:  # any per-video failure is that video's reject
            if is_infrastructure_error(err):
                raise
            rejects.append(reject_row(STAGE, ref.item, err, hint, digest))
            continue
        if rel:
            save_cached_clip(wd, rel, frames, ids)  # a failure here is the workdir's (disk full ...): it stops the run
            for r in video_rows:
                r["frames_path"] = rel
        rows.extend(video_rows)
    return rows, rejects
