"""The user-study suite: a folder of cases in the official demo format, read into items.

One folder per case: ``demo.jpg``, ``demo.json`` = ``{entity_id: {"mask_name": ...,
"trajectory": [[x, y], ...]}}`` in the image's pixels, and mask images (255 = entity).

Rules (docs/evaluation.md):
  * Timing as the official ``demo.py``: point k is where the entity is in frame k. A path
    with at least L points (L = the suite's frames) uses its first L points; only a
    sparser path is interpolated (PCHIP, constant speed); one point keeps it still.
  * Fitting the image to the suite's size (``evaluate.user_study_fit``): ``masks`` (default)
    takes the largest crop of the suite's aspect placed to hold every mask of the case,
    and letterboxes (pads) the whole image when the masks span more than one crop;
    ``pad`` always letterboxes; ``center`` is the plain centre crop (a mask outside it
    rejects the case). Every case in the official format is kept by ``masks`` and ``pad``.
  * Points that fall outside the frame are clipped to its edge and counted in the item's
    notes (stored with the conditions; the Compare page shows them).
  * Refused with a sentence: a NaN or non-numeric point, two keys naming the same entity
    id, a ``mask_name`` that is absolute or leaves the case folder, a missing or
    undecodable file. One bad case is a reject; the others load.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from core.geometry import incircles, rescale
from core.images import DEFAULT_MAX_PIXELS, ImageError, open_image
from core.paths import PathError, confined
from core.rejects import ItemError
from tasks.suites import SuiteItem

FITS = ("masks", "pad", "center")


def timed_path(points: np.ndarray, frames: int) -> np.ndarray:
    """The official demo's timing: the first ``frames`` points, or a sparser path interpolated."""
    from model.maps import interpolate_path

    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) >= frames:
        return pts[:frames].astype(np.float32)
    return interpolate_path(pts, frames)


def fit_window(hw: tuple[int, int], target: tuple[int, int], boxes: list[tuple[int, int, int, int]], fit: str) -> tuple[float, int, int, str | None]:
    """Scale s and offsets (ox, oy) mapping image pixels to the target: x' = (x + 0.5) s - 0.5 - ox.

    Negative offsets pad. ``boxes`` are the masks' (x0, y0, x1, y1) in image pixels. Returns a
    note when the window is not the plain centre crop.
    """
    if fit not in FITS:
        raise ValueError(f"evaluate.user_study_fit must be one of {', '.join(FITS)}, got {fit!r}")
    H, W = hw
    h, w = target
    cover = max(h / H, w / W)
    if fit == "center":
        return cover, int(round((W * cover - w) / 2)), int(round((H * cover - h) / 2)), None
    if fit == "masks" and boxes:
        x0 = min(b[0] for b in boxes) * cover
        y0 = min(b[1] for b in boxes) * cover
        x1 = max(b[2] for b in boxes) * cover
        y1 = max(b[3] for b in boxes) * cover
        if x1 - x0 <= w and y1 - y0 <= h:
            ox = int(round(min(max((x0 + x1) / 2 - w / 2, 0), W * cover - w)))
            oy = int(round(min(max((y0 + y1) / 2 - h / 2, 0), H * cover - h)))
            centred = (int(round((W * cover - w) / 2)), int(round((H * cover - h) / 2)))
            return cover, ox, oy, None if (ox, oy) == centred else f"crop moved to hold every mask (offset {ox}, {oy} px at the suite's scale)"
    contain = min(h / H, w / W)
    ox, oy = int(round((W * contain - w) / 2)), int(round((H * contain - h) / 2))
    why = "the masks span more than one crop" if fit == "masks" else "evaluate.user_study_fit is pad"
    return contain, ox, oy, f"image letterboxed to {h}x{w} ({why})"


def apply_window(img: np.ndarray, s: float, ox: int, oy: int, target: tuple[int, int], interp: int) -> np.ndarray:
    """The image scaled by s and cut (or padded with zeros) to the target at offsets (ox, oy)."""
    h, w = target
    big = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))), interpolation=interp)
    out = np.zeros((h, w, *img.shape[2:]), img.dtype)
    sx0, sy0 = max(ox, 0), max(oy, 0)
    dx0, dy0 = max(-ox, 0), max(-oy, 0)
    cw = min(big.shape[1] - sx0, w - dx0)
    ch = min(big.shape[0] - sy0, h - dy0)
    if cw > 0 and ch > 0:
        out[dy0 : dy0 + ch, dx0 : dx0 + cw] = big[sy0 : sy0 + ch, sx0 : sx0 + cw]
    return out


def _mask_file(folder: Path, key: str, name) -> Path:
    if not isinstance(name, str) or not name.strip():
        raise ItemError(f"entity {key}: 'mask_name' is missing; name the entity's mask file in demo.json")
    try:
        full = Path(confined(str(folder), name, what=f"entity {key}: mask_name"))
    except PathError as err:
        raise ItemError(f"{err}; give a file name inside the case folder {folder.name}/") from None
    if not full.is_file():
        raise ItemError(f"entity {key}: mask file {full} is missing; add it or remove the entity from demo.json")
    return full


def _points(key: str, raw) -> np.ndarray:
    try:
        pts = np.asarray(raw if raw is not None else [], np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ItemError(f"entity {key}: the trajectory must be a list of [x, y] number pairs") from None
    if len(pts) == 0:
        raise ItemError(f"entity {key}: the trajectory is empty; give at least one [x, y] point")
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise ItemError(f"entity {key}: trajectory point {int(np.argmax(bad))} is not a finite number (NaN or infinite); fix it in demo.json")
    return pts


def _entity_ids(keys: list[str]) -> list[int]:
    """Digit keys are their own ids; other keys get ids after the largest; two keys with one id are refused."""
    ids, seen = [], {}
    nxt = max([int(k) for k in keys if k.isdigit()], default=0) + 1
    for k in keys:
        if k.isdigit():
            e = int(k)
        else:
            e, nxt = nxt, nxt + 1
        if e in seen:
            raise ItemError(f"entity keys {seen[e]!r} and {k!r} name the same entity id {e}; give each entity its own key in demo.json")
        seen[e] = k
        ids.append(e)
    return ids


def read_user_study_case(folder: Path, resolution: tuple[int, int], frames: int, fit: str = "masks", threshold: int = 127,
                         max_pixels: int = DEFAULT_MAX_PIXELS) -> SuiteItem:
    """One case folder -> an item at ``resolution`` with one path point per frame (module docstring)."""
    folder = Path(folder)
    meta_path, image_path = folder / "demo.json", folder / "demo.jpg"
    if not image_path.is_file():
        raise ItemError(f"{image_path} is missing; each user-study case needs demo.jpg")
    if not meta_path.is_file():
        raise ItemError(f"{meta_path} is missing; each user-study case needs demo.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ItemError(f"{meta_path} is not valid JSON ({err}); fix the file") from None
    if not isinstance(meta, dict) or not meta:
        raise ItemError(f"{meta_path} lists no entity; it must be an object {{entity_id: {{mask_name, trajectory}}}}")
    img = open_image(image_path, max_pixels, "user-study image")
    H, W = img.shape[:2]
    keys = sorted((str(k) for k in meta), key=lambda k: (len(k), k))
    ids = _entity_ids(keys)
    notes, masks, paths = [], [], []
    for key in keys:
        entry = meta[key]
        if not isinstance(entry, dict):
            raise ItemError(f"entity {key}: expected {{'mask_name': ..., 'trajectory': [[x, y], ...]}}, got {type(entry).__name__}")
        mask_path = _mask_file(folder, key, entry.get("mask_name"))
        m = open_image(mask_path, max_pixels, f"entity {key}: mask", cv2.IMREAD_GRAYSCALE)
        if m.shape != (H, W):
            m = cv2.resize(m, (W, H), interpolation=cv2.INTER_NEAREST)
            notes.append(f"entity {key}: mask resized from its own size to the image's {H}x{W}")
        m = m > threshold
        if not m.any():
            raise ItemError(f"entity {key}: mask {mask_path.name} is empty (no pixel above {threshold}); draw the entity in white")
        masks.append(m)
        paths.append(_points(key, entry.get("trajectory")))
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    h, w = resolution
    s, ox, oy, why = fit_window((H, W), resolution, boxes, fit)
    if why:
        notes.append(why)
    out_masks, trajs = [], []
    for key, m, pts in zip(keys, masks, paths):
        mk = apply_window(m.astype(np.uint8), s, ox, oy, resolution, cv2.INTER_NEAREST_EXACT).astype(bool)
        if not mk.any():
            raise ItemError(f"entity {key}: its mask lies outside the {h}x{w} centre crop; set evaluate.user_study_fit=masks (or pad) to keep it")
        used = timed_path(pts, frames).astype(np.float64)
        if len(pts) > frames:
            notes.append(f"entity {key}: the path has {len(pts)} points; its first {frames} are the {frames} frames (as the official demo)")
        used = rescale(used, s) - np.array([ox, oy])
        outside = (used[:, 0] < 0) | (used[:, 0] > w - 1) | (used[:, 1] < 0) | (used[:, 1] > h - 1)
        if outside.any():
            notes.append(f"entity {key}: {int(outside.sum())} of {frames} trajectory points fell outside the frame and were clipped to its edge")
            used = np.clip(used, 0, [w - 1, h - 1])
        out_masks.append(mk)
        trajs.append(used.astype(np.float32))
    masks_arr = np.stack(out_masks)
    radii = np.array([incircles(mk.astype(np.int32), [1])[1][0] for mk in masks_arr], np.float32)
    return SuiteItem(
        suite="user-study",
        item_id=folder.name,
        image=apply_window(img, s, ox, oy, resolution, cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR),
        masks=masks_arr,
        entity_ids=ids,
        trajectories=np.stack(trajs),
        visible=np.ones((len(masks_arr), frames), bool),
        radii=radii,
        orig_hw=(h, w),
        notes=notes,
        ground_truth="user-study case (the drawn paths, official demo timing)",
    )


def folder_items(folder: Path, resolution: tuple[int, int], frames: int, only: set[str] | None = None, fit: str = "masks",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[SuiteItem], list[tuple[str, str]]]:
    """Every case folder (or ``only`` those) -> (items, [(case, reason)]); one bad case never stops the others."""
    items, bad = [], []
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"user-study folder {root} does not exist; set evaluate.user_study_dir or pass --suite-dir")
    for case in sorted(p for p in root.iterdir() if p.is_dir() and (only is None or p.name in only)):
        try:
            items.append(read_user_study_case(case, resolution, frames, fit, max_pixels=max_pixels))
        except (ItemError, ImageError) as err:
            bad.append((case.name, str(err)))
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - any other failure of one case is that case's reject
            bad.append((case.name, f"{type(err).__name__} while reading the case: {err}; fix or remove the case folder"))
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
