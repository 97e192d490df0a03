"""The image: decode an upload or a file with validation, crop to the model's aspect, downscale.

Not an image, empty, damaged, too small, too many pixels: one sentence each. :class:`WorkImage`
maps points given in the original file's pixels onto the working image (the CLI takes those).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.geometry import rescale
from core.images import DEFAULT_MAX_PIXELS, ImageError, check_image
from tasks.drag.common import DragError, Point

MIN_IMAGE_SIDE = 16
IMAGE_TYPES = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif")


@dataclass
class WorkImage:
    """The image clicks and paths refer to, and how it was made from the file."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    source_hw: tuple[int, int]  # the file's size (after EXIF rotation)
    crop: tuple[int, int, int, int]  # (x0, y0, width, height) of the file kept, in file pixels
    notes: list[str] = field(default_factory=list)
    name: str = "image"

    @property
    def hw(self) -> tuple[int, int]:
        return self.image.shape[:2]

    @property
    def scale(self) -> float:
        return self.image.shape[1] / self.crop[2]

    def to_work(self, points: np.ndarray | Sequence[Point]) -> np.ndarray:
        """Points ``(K, 2)`` in the file's pixels -> the working image's (pixel centres at integers)."""
        p = np.asarray(points, np.float64).reshape(-1, 2)
        s = self.scale
        return rescale(p - np.array(self.crop[:2], np.float64), s)


def _what_it_is(data: bytes) -> str:
    """A guess at what a non-image upload is, for the message."""
    if data.startswith(b"%PDF"):
        return "a PDF document"
    if data.startswith(b"PK\x03\x04"):
        return "a ZIP archive or an Office document"
    if data.startswith(b"\x1f\x8b"):
        return "a gzip archive"
    if data[4:8] == b"ftyp":
        return "an MP4/MOV video"
    if data.startswith(b"RIFF"):
        return "a RIFF file (WAV or AVI)"
    try:
        data[:4096].decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "a binary file of an unknown kind"


def decode_image(data: bytes, name: str = "the upload", max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
    """Bytes of an image file -> (H, W, 3) uint8 RGB and notes; :class:`DragError` if it is not one.

    The header's pixel count is held against ``max_pixels`` (the readers' one budget) before decoding.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    notes: list[str] = []
    if not data:
        raise DragError(f"{name} is empty (0 bytes); choose an image file (PNG, JPEG, WebP, BMP or TIFF)")
    try:
        check_image(data, max_pixels, name, "the drag upload budget", other_formats=True, header_required=False)
    except ImageError as err:
        raise DragError(str(err)) from None
    try:
        img = Image.open(io.BytesIO(data))
        frames = getattr(img, "n_frames", 1)
        img.load()
    except Image.DecompressionBombError as err:
        raise DragError(
            f"{name} has too many pixels to open safely ({err}); downscale it below {Image.MAX_IMAGE_PIXELS * 2 // 1_000_000} megapixels first"
        ) from None
    except UnidentifiedImageError:
        raise DragError(
            f"{name} is not an image (it looks like {_what_it_is(data)}); choose a PNG, JPEG, WebP, BMP or TIFF file"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DragError(f"{name} is a damaged or truncated image ({err}); export it again and retry") from None
    if frames > 1:
        notes.append(f"{name} has {frames} frames; the first one is used")
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        gray = np.clip(arr / top * 255.0, 0, 255).round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), notes + [f"{name} is a {img.mode} image; converted to 8-bit"]
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append(f"{name} has transparent pixels; they are shown on white")
        back = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(back, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), np.uint8)), notes


def prepare_image(
    rgb: np.ndarray, max_side: int, aspect_hw: tuple[int, int] | None = None, name: str = "image", notes: list[str] | None = None
) -> WorkImage:
    """Centre-crop to ``aspect_hw``'s ratio (if given) and downscale to ``max_side``, with notes."""
    notes = list(notes or [])
    H, W = rgb.shape[:2]
    if min(H, W) < MIN_IMAGE_SIDE:
        raise DragError(f"{name} is {W}x{H} pixels; it must be at least {MIN_IMAGE_SIDE} pixels on each side")
    x0, y0, cw, ch = 0, 0, W, H
    if aspect_hw is not None:
        ah, aw = aspect_hw
        target = aw / ah
        if abs((W / H) / target - 1) > 0.01:
            if W / H > target:
                cw = max(1, int(round(H * target)))
                x0 = (W - cw) // 2
            else:
                ch = max(1, int(round(W / target)))
                y0 = (H - ch) // 2
            notes.append(
                f"{name} was centre-cropped from {W}x{H} to {cw}x{ch} to match the model's {aw}x{ah} aspect ratio"
            )
    img = rgb[y0 : y0 + ch, x0 : x0 + cw]
    if min(img.shape[:2]) < MIN_IMAGE_SIDE:
        raise DragError(f"{name} is only {img.shape[1]}x{img.shape[0]} pixels after cropping to the model's aspect ratio; use a larger image")
    if max(ch, cw) > max_side:
        s = max_side / max(ch, cw)
        nw, nh = max(1, int(round(cw * s))), max(1, int(round(ch * s)))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        notes.append(
            f"{name} is large ({cw}x{ch}); it was downscaled to {nw}x{nh} (drag.max_image_side = {max_side}), "
            "and the video comes out at that size"
        )
    return WorkImage(np.ascontiguousarray(img), (H, W), (x0, y0, cw, ch), notes, name)


def load_image(
    source: bytes | str | os.PathLike, max_side: int, aspect_hw: tuple[int, int] | None = None, name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> WorkImage:
    """An image file (path or bytes) -> the working image; :class:`DragError` with the reason otherwise."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise DragError(f"{path} does not exist or is not a file")
        try:
            check_image(path, max_pixels, name, "the drag upload budget", other_formats=True, header_required=False)
        except ImageError as err:
            raise DragError(str(err)) from None
        data = path.read_bytes()
    else:
        data = bytes(source)
        name = name or "the upload"
    rgb, notes = decode_image(data, name, max_pixels)
    return prepare_image(rgb, max_side, aspect_hw, name, notes)
