"""The one way an image file from data is opened: its header is checked before anything is decoded.

Frames, masks, user-study images and masks all go through :func:`open_image`; drag
uploads (bytes, decoded with EXIF rotation) go through :func:`check_image` first.

- The header is read in small pieces (:func:`read_header`), never the whole file, and
  the pixel count it claims is held against a budget: a 30 KB JPEG claiming
  30000x30000 pixels is refused without allocating its gigabytes.
- A file far larger than its claimed size needs (a 2 GB "frame" claiming 640x480) is
  refused from its size on disk, before it is read.
- Every refusal is one sentence, an :class:`ImageError` (an ``ItemError``: a reject row).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from core.imageheader import HeaderError, image_header
from core.rejects import ItemError

DEFAULT_MAX_PIXELS = 40_000_000  # an 8K frame is 33 MP; a header claiming more is refused before decoding
HEADER_READ = 64 * 1024  # the first read; a JPEG with large EXIF/ICC segments is read further, in doubling steps
HEADER_MAX = 16 * 2**20  # a header that is not over after this many bytes is refused
FILE_SLACK = 2**20  # metadata a file may carry beyond its largest possible pixel data


class ImageError(ItemError):
    """An image file that is not opened; the message says why and what to do."""


def _pil_size(head: bytes) -> tuple[int, int, int] | None:
    """(height, width, bits) of a format other than JPEG/PNG (WebP, BMP, TIFF, GIF) from PIL's lazy header read.

    None when PIL cannot size it; also when PIL itself refuses to open it as a bomb (over twice
    its own limit), so that the caller's decoder says that in its words. PIL's global limit is
    never changed here: the dashboard decodes in several threads.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(head)) as img:  # reads the header only
            w, h = img.size
            bits = 16 if img.mode.startswith("I;16") else 32 if img.mode in ("I", "F") else 8
    except Exception:  # noqa: BLE001 - any failure to parse a header means "not an image we can size"
        return None
    return (h, w, bits) if w and h else None


def read_header(f: BinaryIO, other_formats: bool = False) -> tuple[int, int, int]:
    """(height, width, bits per sample) from the start of an open file, reading no more than the header needs."""
    head = f.read(HEADER_READ)
    while True:
        try:
            return image_header(head)
        except HeaderError:
            more = len(head) < HEADER_MAX and head[:2] == b"\xff\xd8"  # a JPEG whose frame header lies further in
            chunk = f.read(len(head)) if more else b""
            if not chunk:
                if other_formats and not head.startswith((b"\xff\xd8", b"\x89PNG")):
                    found = _pil_size(head + f.read(HEADER_MAX - len(head)))
                    if found:
                        return found
                raise
            head += chunk


def _budget_sentence(what: str, h: int, w: int, max_pixels: int, budget_key: str) -> str:
    return (f"{what} claims {w}x{h} pixels ({h * w / 1e6:.0f} MP), over the {max_pixels / 1e6:.0f} MP budget "
            f"({budget_key}); it was not decoded: downscale it, or re-export it at its real size")


def _size_cap(h: int, w: int, bits: int) -> int:
    """The most bytes a file of h x w pixels can honestly need: 4 channels of raw samples plus metadata."""
    return h * w * 4 * max(1, math.ceil(bits / 8)) + FILE_SLACK


def check_image(source: bytes | str | os.PathLike, max_pixels: int, what: str, budget_key: str = "labels.max_frame_pixels",
                other_formats: bool = False, header_required: bool = True) -> tuple[int, int] | None:
    """(height, width) of an image file or upload whose header fits ``max_pixels``; ImageError otherwise.

    With ``header_required=False`` a header that cannot be read gives None: the caller's decoder
    then says what the file is (an upload that is a PDF, say) in its own words.
    """
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            size = len(source)
            h, w, bits = read_header(io.BytesIO(bytes(source[:HEADER_MAX])), other_formats)
        else:
            size = os.stat(source).st_size
            with open(source, "rb") as f:
                h, w, bits = read_header(f, other_formats)
    except HeaderError as err:
        if not header_required:
            return None
        raise ImageError(f"{what} cannot be decoded: it {err}; re-export it") from None
    if h * w > max_pixels:
        raise ImageError(_budget_sentence(what, h, w, max_pixels, budget_key))
    cap = _size_cap(h, w, bits)
    if size > cap:
        raise ImageError(f"{what} is {size / 1e6:.1f} MB, more than a {w}x{h} image can need ({cap / 1e6:.1f} MB at most), "
                         "so it is not the image its header says; re-export it")
    return h, w


def open_image(path: str | os.PathLike, max_pixels: int, what: str, flags: int = cv2.IMREAD_COLOR,
               budget_key: str = "labels.max_frame_pixels") -> np.ndarray:
    """An image file decoded by OpenCV (colour comes back RGB), after :func:`check_image` let it through.

    The bytes are read only once the header and the file size are known to fit the budget,
    so at most ``max_pixels`` worth of file and pixels are ever in memory.
    """
    label = f"{what} {os.fsdecode(path)}"
    check_image(path, max_pixels, label, budget_key)
    try:
        data = np.fromfile(Path(path), dtype=np.uint8)  # never cv2.imread: a path that is not UTF-8 crashes it
        img = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as err:
        raise ImageError(f"{label} cannot be decoded ({str(err).strip().splitlines()[-1]}); re-export it") from None
    if img is None:
        raise ImageError(f"{label} cannot be decoded (truncated or not an image); re-export it")
    if img.ndim == 3 and img.shape[2] == 3 and flags == cv2.IMREAD_COLOR:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img
