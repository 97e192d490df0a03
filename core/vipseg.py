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
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.images import DEFAULT_MAX_PIXELS, ImageError, open_image
from core.paths import PathError, inside_local, is_utf8, printable, relative_parts
from core.rejects import ItemError

log = logging.getLogger(__name__)

VOID = 0
MAX_STUFF_ID = 124


class VideoError(ItemError):
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
    try:
        raw = json.loads(files[0].read_text(encoding="utf-8"))
        return {int(c["id"]): Category(int(c["id"]), str(c["name"]), bool(c.get("isthing", False))) for c in raw}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
        problem = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ValueError(f"categories file {files[0]} is not a JSON list of {{\"id\", \"name\", \"isthing\"}} objects "
                         f"({type(err).__name__}: {problem}); fix it, or remove it to label without category names") from None


def read_split_lines(root: Path, split: str) -> tuple[list[str], dict[str, int]]:
    """The split's video names in file order, each once, and the names listed more than once (with their count)."""
    path = Path(root) / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found; a VIPSeg root holds train.txt/val.txt/test.txt")
    text = path.read_text(encoding="utf-8", errors="surrogateescape").removeprefix("\ufeff")  # a byte-order mark is no name
    names = [line.strip() for line in text.splitlines() if line.strip()]
    unique = list(dict.fromkeys(names))
    repeated = {n: names.count(n) for n in unique if names.count(n) > 1} if len(unique) < len(names) else {}
    if repeated:
        log.warning("split file %s lists %d video(s) more than once (%s); each is labelled once", path, len(repeated),
                    ", ".join(f"{n!r} x{c}" for n, c in list(repeated.items())[:5]))
    return unique, repeated


def read_split(root: Path, split: str) -> list[str]:
    """The split's video names, each once (a repeated line is dropped with a warning)."""
    return read_split_lines(root, split)[0]


@dataclass(frozen=True)
class VideoFiles:
    video_id: str
    frames: list[Path]
    masks: list[Path]


def check_video_name(video_id: str) -> str:
    """A split-file line must name one folder inside imgs/ and panomasks/ (no path of its own)."""
    if not is_utf8(video_id):
        raise VideoError(f"video name {printable(video_id)!r} is not valid UTF-8 (its folder name holds other bytes), so no table "
                         "can name it; rename the folder and its split-file line to UTF-8")
    try:
        rel = relative_parts(video_id, what="video name")
    except PathError as err:
        raise VideoError(f"{err}; a split file lists folder names under imgs/, fix or drop that line") from None
    if not rel or "/" in rel or rel != video_id:
        raise VideoError(f"video name {video_id!r} is not a single folder name under imgs/; fix or drop that line of the split file")
    return video_id


_FRAME_NAME = re.compile(r"^(\D*?)(\d+)(\D*)$")


def order_frames(paths: list[Path], folder: Path, what: str = "frame") -> list[Path]:
    """Files in frame order: by the number in their names (0.jpg, 2.jpg, 10.jpg), never as strings.

    Names must share one pattern (a prefix, a number, a suffix) and no two may carry the same
    number; anything else has no frame order a person would agree with, so it is refused.
    """
    parsed = []
    for p in paths:
        m = _FRAME_NAME.match(p.stem)
        if m is None:
            raise VideoError(f"{what} name {p.name!r} in {folder} carries no frame number; name {what}s by their number (00000.jpg, 00001.jpg, ...)")
        parsed.append((int(m.group(2)), (m.group(1), m.group(3)), p))
    patterns = sorted({pat for _, pat, _ in parsed})
    if len(patterns) > 1:
        a, b = (next(p.name for _, q, p in parsed if q == pat) for pat in patterns[:2])
        raise VideoError(f"{what} names in {folder} mix naming patterns ({a!r} and {b!r}), so their order is ambiguous; rename them to one pattern")
    seen: dict[int, Path] = {}
    for n, _, p in parsed:
        if n in seen:
            raise VideoError(f"{what}s {seen[n].name!r} and {p.name!r} in {folder} carry the same number {n}; keep one of them")
        seen[n] = p
    return [p for _, _, p in sorted(parsed, key=lambda x: x[0])]


def _media_files(folder: Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    found = [p for p in folder.iterdir() if p.suffix.lower() in suffixes]
    odd = [p for p in found if not p.is_file()]
    if odd:
        raise VideoError(f"{odd[0]} is a folder or a broken link, not a {what}; move it out of {folder}")
    for p in found:
        _inside_root(folder.parent.parent, p)
    return order_frames(found, folder, what)


def _inside_root(root: Path, path: Path) -> None:
    """A file or folder of a video must resolve inside the data root: a symlink out is refused like ``..``."""
    try:
        inside_local(str(root), str(path), what="video file")
    except PathError as err:
        raise VideoError(f"{err}; the data root must hold its videos itself, copy the files in instead of linking out") from None


def list_video(root: Path, video_id: str) -> VideoFiles:
    """The frame and mask files of a video in frame order, checked to pair up one to one."""
    root = Path(root)
    check_video_name(video_id)
    img_dir, mask_dir = root / "imgs" / video_id, root / "panomasks" / video_id
    if not img_dir.is_dir():
        raise VideoError(f"frames folder {img_dir} is missing; restore it or drop '{video_id}' from the split file")
    if not mask_dir.is_dir():
        raise VideoError(f"mask folder {mask_dir} is missing; restore it or drop '{video_id}' from the split file")
    for folder in (img_dir, mask_dir):
        _inside_root(root, folder)
    frames = _media_files(img_dir, (".jpg", ".jpeg", ".png"), "frame")
    masks = _media_files(mask_dir, (".png",), "mask")
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


def read_frame(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 (H, W, 3); the header is checked against ``max_pixels`` before decoding."""
    try:
        return open_image(path, max_pixels, "frame")
    except ImageError as err:
        raise VideoError(str(err)) from None


def read_mask(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, categories: dict[int, Category] | None = None) -> np.ndarray:
    """Panoptic ids (H, W) int32 from an 8/16-bit single-channel PNG.

    An 8-bit mask is refused when its ids cannot be the panoptic ids: when the
    categories file has thing categories whose ids (category*100 + instance) pass
    255, or, without a categories file, when it holds thing ids at all (ids above
    255 wrap silently in 8 bits, so a thing id there cannot be trusted).
    """
    try:
        m = open_image(path, max_pixels, "mask", cv2.IMREAD_UNCHANGED)
    except ImageError as err:
        raise VideoError(str(err)) from None
    if m.ndim == 3:
        raise VideoError(f"mask {path} has {m.shape[2]} channels; panoptic masks are single-channel id PNGs")
    if m.dtype == np.uint8:
        check_8bit_mask(path, m, categories or {})
    return m.astype(np.int32)


def check_8bit_mask(path: Path, m: np.ndarray, categories: dict[int, Category]) -> None:
    things = [c.id for c in categories.values() if c.isthing]
    top = max(things, default=0)
    if top * 100 > 255:
        raise VideoError(
            f"mask {path} is an 8-bit PNG, but the categories file has thing categories up to {top}, whose ids "
            f"(category*100 + instance, e.g. {top * 100 + 1}) need 16 bits; re-export the masks as 16-bit PNGs"
        )
    if not categories and int(m.max(initial=0)) > MAX_STUFF_ID:
        raise VideoError(
            f"mask {path} is an 8-bit PNG holding thing ids (above {MAX_STUFF_ID}); thing ids are category*100 + instance "
            "and wrap past 255 in 8 bits, so re-export the masks as 16-bit PNGs (or add the categories file)"
        )


def write_mask(path: Path, ids: np.ndarray) -> None:
    """Write panoptic ids as a 16-bit PNG (ids reach category*100+instance)."""
    ok = cv2.imwrite(str(path), ids.astype(np.uint16))
    if not ok:
        raise OSError(f"could not write {path}")
