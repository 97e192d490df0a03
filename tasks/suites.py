"""Suites: the inputs of generation and the ground truth of evaluation.

A suite is a list of ``SuiteItem``: a first frame, first-frame entity masks
and one trajectory per entity, at the suite's resolution.

- ``sample`` / ``vipseg-val``: built from the ``labels`` table and the frames cache
  (the paper's protocol: 256x256, 14 frames; the real clip is the FID/FVD reference).
- ``user-study``: a folder of still images with masks and trajectories, no video,
  in the official demo format (one folder per case: ``demo.jpg``, ``demo.json`` =
  ``{entity_id: {"mask_name": ..., "trajectory": [[x, y], ...]}}`` in original
  image pixels, and mask images where 255 = entity).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.media import load_cached_clip, resize_clip
from core.tables import Workdir
from core.geometry import incircles, rescale, scale_points


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    kind: str  # "labels" | "folder"
    dataset: str | None = None
    split: str | None = None
    folder: str | None = None
    resolution: tuple[int, int] = (256, 256)
    frames: int = 14


SUITES = {
    "sample": SuiteSpec("sample", "labels", dataset="sample", split="val"),
    "vipseg-val": SuiteSpec("vipseg-val", "labels", dataset="vipseg", split="val"),
    "user-study": SuiteSpec("user-study", "folder"),
}


@dataclass
class SuiteItem:
    suite: str
    item_id: str
    image: np.ndarray  # (H, W, 3) uint8, first frame
    masks: np.ndarray  # (E, H, W) bool, first frame
    entity_ids: list[int]
    trajectories: np.ndarray  # (E, L, 2) float32, suite pixels
    visible: np.ndarray  # (E, L) bool
    radii: np.ndarray  # (E,) first-frame incircle radius
    orig_hw: tuple[int, int]  # ObjMC is reported at this size
    reference: str | None = None  # frames-cache path of the real clip, if any
    notes: list[str] = field(default_factory=list)

    @property
    def hw(self) -> tuple[int, int]:
        return self.image.shape[:2]


class ItemError(ValueError):
    """A suite item cannot be used; the message says why and what to do."""


def labels_items(
    workdir: Workdir, spec: SuiteSpec, only: set[str] | None = None, gt_tracker=None, grid_size: int = 10, add_centers: bool = True
) -> list[SuiteItem]:
    """Items from the ``labels`` table: one per video of (dataset, split), or of ``only`` those.

    With ``gt_tracker`` the trajectories are the official evaluation ground truth:
    the real clip tracked from each entity's first-frame centre (grid-nearest rule).
    Without, they are the label trajectories (per-frame incircle centres for
    ``mask-center`` labels, which jump under occlusion).
    """
    import pyarrow.compute as pc

    filt = (pc.field("dataset") == spec.dataset) & (pc.field("split") == spec.split)
    if only is not None:
        filt &= pc.field("video_id").isin(sorted(only))
    rows = workdir.read("labels", filter=filt)
    items = []
    for video_id, group in rows.groupby("video_id", sort=True):
        group = group.sort_values("entity_id")
        first = group.iloc[0]
        label_hw = (int(first["height"]), int(first["width"]))
        L = min(spec.frames, len(first["centers"]))
        frames, ids = load_cached_clip(workdir, first["frames_path"])
        frames, ids = resize_clip(frames[:L], ids[:L], spec.resolution)
        entity_ids = [int(e) for e in group["entity_id"]]
        masks = np.stack([ids[0] == e for e in entity_ids])
        keep = masks.any(axis=(1, 2))  # an entity can vanish when the suite is coarser than the labels
        trajectories = np.stack([scale_points(np.stack(c)[:L], label_hw, spec.resolution) for c in group["centers"]]).astype(np.float32)
        visible = np.stack([np.asarray(v[:L], bool) for v in group["visible"]])
        if gt_tracker is not None:
            from eval.objmc import ground_truth_tracks

            trajectories = ground_truth_tracks(frames, trajectories[:, 0], gt_tracker, grid_size, add_centers).astype(np.float32)
        _, radii, _ = incircles(ids[0], entity_ids)
        items.append(
            SuiteItem(
                suite=spec.name,
                item_id=str(video_id),
                image=frames[0],
                masks=masks[keep],
                entity_ids=[e for e, k in zip(entity_ids, keep) if k],
                trajectories=trajectories[keep],
                visible=visible[keep],
                radii=radii[keep].astype(np.float32),
                orig_hw=(int(first["orig_height"]), int(first["orig_width"])),
                reference=str(first["frames_path"]),
            )
        )
    return items


def cover_crop(hw: tuple[int, int], target: tuple[int, int]) -> tuple[float, int, int]:
    """Scale that covers ``target`` with ``hw`` keeping the aspect, and the centre crop's offsets."""
    H, W = hw
    h, w = target
    s = max(h / H, w / W)
    return s, int(round((W * s - w) / 2)), int(round((H * s - h) / 2))


def _resize_cover(img: np.ndarray, target: tuple[int, int], interp: int) -> np.ndarray:
    s, ox, oy = cover_crop(img.shape[:2], target)
    h, w = target
    big = cv2.resize(img, (max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s))), interpolation=interp)
    return big[oy : oy + h, ox : ox + w]


def read_user_study_case(folder: Path, resolution: tuple[int, int], frames: int, threshold: int = 127) -> SuiteItem:
    """One case folder -> an item at ``resolution``; points outside are clipped and noted."""
    from model.maps import interpolate_path

    folder = Path(folder)
    meta_path, image_path = folder / "demo.json", folder / "demo.jpg"
    if not image_path.is_file():
        raise ItemError(f"{image_path} is missing; each user-study case needs demo.jpg")
    if not meta_path.is_file():
        raise ItemError(f"{meta_path} is missing; each user-study case needs demo.json")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ItemError(f"{meta_path} is not valid JSON ({err}); fix the file") from None
    img = cv2.imdecode(np.fromfile(image_path, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ItemError(f"{image_path} cannot be decoded; replace it with a JPEG")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    H, W = img.shape[:2]
    s, ox, oy = cover_crop((H, W), resolution)
    h, w = resolution
    notes, masks, trajs, ids = [], [], [], []
    for key in sorted(meta, key=lambda k: (len(str(k)), str(k))):
        entry = meta[key]
        mask_path = folder / str(entry.get("mask_name", ""))
        if not entry.get("mask_name") or not mask_path.is_file():
            raise ItemError(f"entity {key}: mask file {mask_path} is missing; add it or remove the entity from demo.json")
        m = cv2.imdecode(np.fromfile(mask_path, np.uint8), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise ItemError(f"entity {key}: mask {mask_path} cannot be decoded; save it as a JPEG/PNG with 255 = entity")
        if m.shape != (H, W):
            m = cv2.resize(m, (W, H), interpolation=cv2.INTER_NEAREST)
            notes.append(f"entity {key}: mask resized from its own size to the image's {H}x{W}")
        m = _resize_cover((m > threshold).astype(np.uint8), resolution, cv2.INTER_NEAREST_EXACT).astype(bool)
        if not m.any():
            raise ItemError(f"entity {key}: mask {mask_path.name} is empty inside the {h}x{w} crop; draw a larger mask")
        pts = np.asarray(entry.get("trajectory", []), np.float64).reshape(-1, 2)
        if len(pts) == 0:
            raise ItemError(f"entity {key}: the trajectory is empty; give at least one [x, y] point")
        pts = rescale(pts, s) - np.array([ox, oy])
        outside = (pts[:, 0] < 0) | (pts[:, 0] > w - 1) | (pts[:, 1] < 0) | (pts[:, 1] > h - 1)
        if outside.any():
            notes.append(f"entity {key}: {int(outside.sum())} of {len(pts)} trajectory points fell outside the image and were clipped")
            pts = np.clip(pts, 0, [w - 1, h - 1])
        traj = pts if len(pts) == frames else interpolate_path(pts, frames)
        masks.append(m)
        trajs.append(traj.astype(np.float32))
        ids.append(int(key) if str(key).isdigit() else len(ids) + 1)
    if not masks:
        raise ItemError(f"{meta_path} lists no entity; add at least one")
    masks_arr = np.stack(masks)
    # Radii of each mask's own incircle (entities may overlap, so not one id map).
    radii = np.array([incircles(mk.astype(np.int32), [1])[1][0] for mk in masks_arr], np.float32)
    return SuiteItem(
        suite="user-study",
        item_id=folder.name,
        image=_resize_cover(img, resolution, cv2.INTER_AREA),
        masks=masks_arr,
        entity_ids=ids,
        trajectories=np.stack(trajs),
        visible=np.ones((len(masks), frames), bool),
        radii=radii,
        orig_hw=(h, w),
        notes=notes,
    )


def folder_items(
    folder: Path, resolution: tuple[int, int], frames: int, only: set[str] | None = None
) -> tuple[list[SuiteItem], list[tuple[str, str]]]:
    """Every case folder (or ``only`` those) -> (items, [(case, reason)] for the ones that cannot be used)."""
    items, bad = [], []
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"user-study folder {root} does not exist; set evaluate.user_study_dir (--set evaluate.user_study_dir=DIR)")
    for case in sorted(p for p in root.iterdir() if p.is_dir() and (only is None or p.name in only)):
        try:
            items.append(read_user_study_case(case, resolution, frames))
        except ItemError as err:
            bad.append((case.name, str(err)))
    return items, bad


def write_user_study_case(folder: Path, image: np.ndarray, masks: np.ndarray, trajectories: list[np.ndarray]) -> None:
    """Save a case in the official demo format (the Drag page and tests use this)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "demo.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    meta = {}
    for k, (m, t) in enumerate(zip(masks, trajectories), start=1):
        name = f"mask_{k}.jpg"
        cv2.imwrite(str(folder / name), (np.asarray(m, bool) * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])
        meta[str(k)] = {"mask_name": name, "trajectory": np.asarray(t, float).round(2).tolist()}
    (folder / "demo.json").write_text(json.dumps(meta, indent=1))
