"""Reading datasets in the VIPSeg layout.

    <root>/imgs/<video>/<frame>.jpg
    <root>/panomasks/<video>/<frame>.png      panoptic ids, 8- or 16-bit PNG
    <root>/train.txt, val.txt, test.txt       one video name per line
    <root>/*categories*.json                  [{"id", "name", "isthing"}, ...] (optional)

Panoptic id encoding: 0 = void, 1..124 = a stuff segment whose id is its category,
> 124 = a thing: category * 100 + instance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VOID = 0
MAX_STUFF_ID = 124


class VideoError(ValueError):
    """A video cannot be used; the message says why and what to do."""


def decode_ids(ids: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Panoptic ids -> (category_id, instance_id, is_thing). Void gives category 0."""
    ids = np.asarray(ids, dtype=np.int64)
    is_thing = ids > MAX_STUFF_ID
    category = np.where(is_thing, ids // 100, ids)
    instance = np.where(is_thing, ids % 100, 0)
    return category, instance, is_thing


def encode_id(category_id: int, instance: int = 0, is_thing: bool = False) -> int:
    if not is_thing:
        if not 1 <= category_id <= MAX_STUFF_ID:
            raise ValueError(f"stuff category id must be in 1..{MAX_STUFF_ID}, got {category_id}")
        return category_id
    value = category_id * 100 + instance
    if value <= MAX_STUFF_ID or not 0 <= instance < 100:
        raise ValueError(f"thing (category {category_id}, instance {instance}) does not encode above {MAX_STUFF_ID}")
    return value


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    isthing: bool


def load_categories(root: Path) -> dict[int, Category]:
    """Categories from the dataset's JSON, or {} when it ships none."""
    files = sorted(Path(root).glob("*categories*.json"))
    if not files:
        return {}
    raw = json.loads(files[0].read_text())
    return {int(c["id"]): Category(int(c["id"]), str(c["name"]), bool(c.get("isthing", False))) for c in raw}


def read_split(root: Path, split: str) -> list[str]:
    path = Path(root) / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found; a VIPSeg root holds train.txt/val.txt/test.txt")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class VideoFiles:
    video_id: str
    frames: list[Path]
    masks: list[Path]


def list_video(root: Path, video_id: str) -> VideoFiles:
    """The frame and mask files of a video, checked to pair up one to one."""
    root = Path(root)
    img_dir, mask_dir = root / "imgs" / video_id, root / "panomasks" / video_id
    if not img_dir.is_dir():
        raise VideoError(f"frames folder {img_dir} is missing; restore it or drop '{video_id}' from the split file")
    if not mask_dir.is_dir():
        raise VideoError(f"mask folder {mask_dir} is missing; restore it or drop '{video_id}' from the split file")
    frames = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    masks = sorted(p for p in mask_dir.iterdir() if p.suffix.lower() == ".png")
    if len(frames) != len(masks):
        raise VideoError(
            f"{len(frames)} frames but {len(masks)} masks in {img_dir} and {mask_dir}; every frame needs a mask of the same name"
        )
    for f, m in zip(frames, masks):
        if f.stem != m.stem:
            raise VideoError(f"frame {f.name} is paired with mask {m.name}; frames and masks must share names")
    if not frames:
        raise VideoError(f"no frames in {img_dir}")
    return VideoFiles(video_id, frames, masks)


def read_frame(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise VideoError(f"frame {path} cannot be decoded (truncated or not an image); re-extract it")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    """Panoptic ids (H, W) int32 from an 8/16-bit single-channel PNG."""
    data = np.fromfile(path, dtype=np.uint8)
    m = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if m is None:
        raise VideoError(f"mask {path} cannot be decoded (truncated or not a PNG); re-export it")
    if m.ndim == 3:
        raise VideoError(f"mask {path} has {m.shape[2]} channels; panoptic masks are single-channel id PNGs")
    return m.astype(np.int32)


def write_mask(path: Path, ids: np.ndarray) -> None:
    """Write panoptic ids as a 16-bit PNG (ids reach category*100+instance)."""
    ok = cv2.imwrite(str(path), ids.astype(np.uint16))
    if not ok:
        raise OSError(f"could not write {path}")
