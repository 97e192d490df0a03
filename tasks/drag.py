"""The interactive drag: an image, clicked entities, drawn paths -> a video from a trained controller.

Plain functions and dataclasses shared by the dashboard's Drag page and ``draganything drag``:

1. **Image** (:func:`load_image`): decode an upload or a file with validation (not an image,
   empty, damaged, too small, too many pixels: one sentence each), optionally centre-crop
   it to the model's aspect ratio, downscale it so its longer side is at most
   ``drag.max_image_side`` (with a note). :class:`WorkImage` maps points given in the
   original file's pixels onto the working image (the CLI takes those).
2. **Entities** (:func:`build_case`): each :class:`EntitySpec` is positive/negative clicks
   (or "the whole image" for camera motion) and a path of clicks. Clicks are segmented
   with SAM or the GrabCut fallback (``model.segmentation``); an empty mask, a missing
   path or more entities than ``drag.max_entities`` is a :class:`DragError`; points
   outside the image are clipped with a note.
3. **Trajectory**: the drawn path is moved so that it starts at the entity's inscribed
   circle centre (the point the model was trained to move; :func:`anchor_path`): the
   entity then moves by exactly the drawn displacement, i.e. the point that was grabbed
   follows the path. It is interpolated to one point per frame with PCHIP by the model.
4. **Preview** (:func:`model_view`): the centres, radii, Gaussian maps and entity maps
   exactly as the pipeline renders them at the model's resolution (entity vectors
   shown as one colour per entity).
5. **Checkpoint** (:func:`choose_checkpoint`): an explicit id, else the newest trained
   controller of the workdir's ``checkpoints`` table.
6. **Generation** (:func:`generate_video`): in-process (CLI) or as a Ray task with a
   progress actor (:func:`submit`, the page); the video is an H.264 mp4 in the workdir.
7. **Case** (:func:`save_case`): the official user-study folder format (``demo.jpg``,
   ``demo.json``, mask JPEGs), readable by ``tasks.suites.read_user_study_case``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from core.config import Config
from core.geometry import incircle, rescale
from core.media import write_mp4
from core.tables import Workdir
from tasks.suites import SuiteItem, write_user_study_case

Point = tuple[float, float]
Progress = Callable[[str, int, int], None]  # (stage, done, total)

MIN_IMAGE_SIDE = 16
IMAGE_TYPES = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif")
PALETTE = (  # RGB, one per entity (cycled)
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (127, 127, 127),
)
NEGATIVE_COLOR = (230, 30, 30)
CASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class DragError(ValueError):
    """An input the drag cannot use; the message says what is wrong and what to do."""


def color(k: int) -> tuple[int, int, int]:
    return PALETTE[k % len(PALETTE)]


# ---------------------------------------------------------------------------------------
# the image
# ---------------------------------------------------------------------------------------
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


def decode_image(data: bytes, name: str = "the upload") -> tuple[np.ndarray, list[str]]:
    """Bytes of an image file -> (H, W, 3) uint8 RGB and notes; :class:`DragError` if it is not one."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    notes: list[str] = []
    if not data:
        raise DragError(f"{name} is empty (0 bytes); choose an image file (PNG, JPEG, WebP, BMP or TIFF)")
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
    source: bytes | str | os.PathLike, max_side: int, aspect_hw: tuple[int, int] | None = None, name: str | None = None
) -> WorkImage:
    """An image file (path or bytes) -> the working image; :class:`DragError` with the reason otherwise."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise DragError(f"{path} does not exist or is not a file")
        data = path.read_bytes()
    else:
        data = bytes(source)
        name = name or "the upload"
    rgb, notes = decode_image(data, name)
    return prepare_image(rgb, max_side, aspect_hw, name, notes)


# ---------------------------------------------------------------------------------------
# points
# ---------------------------------------------------------------------------------------
def parse_point(text: str, what: str = "point") -> Point:
    """``"x,y"`` -> (x, y); :class:`DragError` naming ``what`` otherwise."""
    parts = [p.strip() for p in str(text).strip().split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        if not (np.isfinite(x) and np.isfinite(y)):
            raise ValueError
    except ValueError:
        raise DragError(f"{what} {text!r} must be X,Y: two numbers separated by a comma, e.g. 120,80") from None
    return (x, y)


def parse_points(text: str, what: str = "path") -> list[Point]:
    """``"x1,y1 x2,y2 ..."`` (spaces or semicolons between points) -> a list of points."""
    tokens = [t for t in re.split(r"[\s;]+", str(text).strip()) if t]
    if not tokens:
        raise DragError(f"{what} is empty; give at least one X,Y point (several separated by spaces)")
    return [parse_point(t, f"{what}: point") for t in tokens]


def clip_points(points: np.ndarray | Sequence[Point], hw: tuple[int, int], what: str) -> tuple[np.ndarray, str | None]:
    """Points clipped into the image, and a warning when any was outside."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    H, W = hw
    outside = (p[:, 0] < 0) | (p[:, 0] > W - 1) | (p[:, 1] < 0) | (p[:, 1] > H - 1)
    if not outside.any():
        return p, None
    clipped = np.clip(p, 0, [W - 1, H - 1])
    return clipped, (
        f"{what}: {int(outside.sum())} of {len(p)} point(s) lay outside the {W}x{H} image and were moved to its edge"
    )


def anchor_path(path: np.ndarray, start: Sequence[float]) -> np.ndarray:
    """The path moved so that it begins at ``start`` (same shape and displacement)."""
    p = np.asarray(path, np.float64).reshape(-1, 2)
    return p - p[0] + np.asarray(start, np.float64)


def camera_mask(hw: tuple[int, int]) -> np.ndarray:
    """The whole-image selection: the model reads it as camera motion."""
    return np.ones(hw, bool)


# ---------------------------------------------------------------------------------------
# entities and the case
# ---------------------------------------------------------------------------------------
@dataclass
class EntitySpec:
    """What the user gave for one entity (working-image pixels)."""

    positive: list[Point] = field(default_factory=list)
    negative: list[Point] = field(default_factory=list)
    path: list[Point] = field(default_factory=list)
    camera: bool = False
    choice: int | None = None  # SAM: which of its 3 masks (0 small .. 2 large); None = best score


@dataclass
class Entity:
    """One resolved entity: its mask and the path the model gets."""

    mask: np.ndarray  # (H, W) bool
    path: np.ndarray  # (K, 2) as drawn (clipped), working-image pixels
    trajectory: np.ndarray  # (K, 2) what the model gets (anchored at the centre unless as-drawn; clipped)
    centre: tuple[float, float]  # inscribed circle centre
    radius: float
    camera: bool = False
    method: str = ""
    score: float = float("nan")


def segment_spec(segmenter, image: np.ndarray, spec: EntitySpec, label: str = "entity"):
    """The mask of one entity: the whole image for the camera, else the segmenter's, never empty."""
    from model.segmentation import Segmentation

    if spec.camera:
        return Segmentation(camera_mask(image.shape[:2]), 1.0, [], "whole image")
    if not spec.positive:
        raise DragError(f"{label}: click on it at least once to select it (or choose the whole image for camera motion)")
    kwargs = {"choice": spec.choice} if spec.choice is not None and getattr(segmenter, "name", "").startswith("sam") else {}
    seg = segmenter.segment(image, list(spec.positive), list(spec.negative), **kwargs)
    if not np.asarray(seg.mask).any():
        where = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in spec.positive)
        raise DragError(
            f"{label}: the selection at {where} gave an empty mask ({seg.method}); click nearer the middle of the entity, "
            "remove negative clicks that cover it, or pick another of SAM's masks"
        )
    return seg


@dataclass
class DragCase:
    """An image and its entities, ready to become a suite item or a saved case."""

    image: np.ndarray
    entities: list[Entity]
    notes: list[str] = field(default_factory=list)
    name: str = "drag"

    @property
    def hw(self) -> tuple[int, int]:
        return self.image.shape[:2]

    @property
    def masks(self) -> np.ndarray:
        return np.stack([e.mask for e in self.entities])

    @property
    def trajectories(self) -> list[np.ndarray]:
        return [e.trajectory for e in self.entities]

    def case_id(self) -> str:
        """A short digest of everything that determines the video (image, masks, trajectories)."""
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(self.image).tobytes())
        h.update(str(self.image.shape).encode())
        for e in self.entities:
            h.update(np.packbits(e.mask).tobytes())
            h.update(np.round(e.trajectory, 2).astype(np.float32).tobytes())
        return h.hexdigest()[:12]

    def to_item(self, num_frames: int, item_id: str | None = None) -> SuiteItem:
        """The generator's input: trajectories interpolated (PCHIP) to one point per frame."""
        from model.maps import interpolate_path

        trajs = np.stack([interpolate_path(t, num_frames) for t in self.trajectories]).astype(np.float32)
        n = len(self.entities)
        return SuiteItem(
            suite="drag",
            item_id=item_id or self.case_id(),
            image=self.image,
            masks=self.masks,
            entity_ids=list(range(1, n + 1)),
            trajectories=trajs,
            visible=np.ones((n, num_frames), bool),
            radii=np.array([e.radius for e in self.entities], np.float32),
            orig_hw=self.hw,
            notes=list(self.notes),
        )

    def model_notes(self, height: int, width: int, min_radius: float = 2.5) -> list[str]:
        """Warnings that depend on the model's resolution (entities too thin for a Gaussian)."""
        H, W = self.hw
        s = float(np.sqrt(height / H * width / W))
        out = []
        for k, e in enumerate(self.entities, start=1):
            if not e.camera and e.radius * s < min_radius:
                out.append(
                    f"entity {k} is very thin at the model's {width}x{height} (inscribed radius {e.radius * s:.1f} px < "
                    f"{min_radius}): the model gets no Gaussian for it, only its entity map; select a thicker part"
                )
        return out


def check_count(n: int, max_entities: int) -> None:
    if n == 0:
        raise DragError("no entity selected: click on the thing to move (or choose the whole image for camera motion) and draw its path")
    if n > max_entities:
        raise DragError(
            f"{n} entities selected, but at most {max_entities} can be controlled in one video (drag.max_entities); "
            f"remove {n - max_entities}"
        )


def resolve_entity(
    segmenter, image: np.ndarray, spec: EntitySpec, label: str, anchor: bool = True, notes: list[str] | None = None
) -> Entity:
    """Segment one entity and turn its drawn path into the model's trajectory (clipped, noted)."""
    notes = notes if notes is not None else []
    hw = image.shape[:2]
    if spec.positive and not spec.camera:
        pos, warn = clip_points(spec.positive, hw, f"{label} clicks")
        neg, warn2 = clip_points(spec.negative, hw, f"{label} negative clicks") if spec.negative else (np.zeros((0, 2)), None)
        notes += [w for w in (warn, warn2) if w]
        spec = EntitySpec([tuple(p) for p in pos], [tuple(p) for p in neg], spec.path, spec.camera, spec.choice)
    seg = segment_spec(segmenter, image, spec, label)
    if not spec.path:
        raise DragError(f"{label} has no path: click where it should go, in order (a single point keeps it still)")
    path = np.asarray(spec.path, np.float64).reshape(-1, 2)
    cx, cy, r = incircle(seg.mask)
    # Only the trajectory the model gets must stay inside: a drawn path is a displacement
    # (a camera pan may well be drawn off the edge).
    traj, warn = clip_points(anchor_path(path, (cx, cy)) if anchor else path, hw, f"{label} path")
    if warn:
        notes.append(warn)
    return Entity(np.asarray(seg.mask, bool), path, traj, (cx, cy), float(r), spec.camera, seg.method, float(seg.score))


def build_case(
    image: np.ndarray,
    specs: Sequence[EntitySpec],
    segmenter,
    max_entities: int,
    anchor: bool = True,
    notes: Sequence[str] = (),
    name: str = "drag",
) -> DragCase:
    """Every entity resolved (or the first problem as a :class:`DragError`)."""
    check_count(len(specs), max_entities)
    if sum(1 for s in specs if s.camera) > 1:
        raise DragError("the whole image (camera motion) is selected more than once; keep one camera path")
    out_notes = list(notes)
    entities = [resolve_entity(segmenter, image, s, f"entity {k}", anchor, out_notes) for k, s in enumerate(specs, start=1)]
    return DragCase(image, entities, out_notes, name)


# ---------------------------------------------------------------------------------------
# what the model sees
# ---------------------------------------------------------------------------------------
@dataclass
class ModelView:
    """Per-frame conditioning at the model's resolution, as the pipeline renders it."""

    centers: np.ndarray  # (T, N, 2) model pixels, in the user's entity order
    radii: np.ndarray  # (N,) model pixels
    gaussian: np.ndarray | None  # (H, W) float in [0, 1] for the frame asked
    entity: np.ndarray | None  # (H, W, 3) uint8: each entity's disc in its colour (its vector, in the model)
    height: int
    width: int


def model_view(case: DragCase, height: int, width: int, num_frames: int, frame: int | None = 0,
               sigma_ratio: float = 0.4, support_ratio: float = 1.0) -> ModelView:
    """Centres, radii and (for ``frame``) the Gaussian and entity maps the model is given.

    Same steps as ``DragAnythingPipeline.prepare_entities`` + ``render_conditions``: paths
    interpolated with PCHIP, moved to the model's pixel grid, the generator's radii scaled
    with them, entities painted large to small.
    """
    import torch

    from model.maps import entity_maps, gaussian_maps, interpolate_path, paint_order

    H, W = case.hw
    sx, sy = width / W, height / H
    paths = np.stack([interpolate_path(t, num_frames) for t in case.trajectories], 1)  # (T, N, 2)
    centers = rescale(paths, sx, sy)
    radii = np.array([e.radius for e in case.entities], np.float32) * float(np.sqrt(sx * sy))
    gauss = ent = None
    if frame is not None:
        t = int(np.clip(frame, 0, num_frames - 1))
        c = torch.from_numpy(centers[t : t + 1]).float()
        r = torch.from_numpy(radii).float()
        order = paint_order(r)
        gauss = gaussian_maps(c[:, order], r[order], height, width, sigma_ratio, support_ratio)[0, 0].numpy()
        cols = torch.tensor([color(k) for k in range(len(case.entities))], dtype=torch.float32)[order]
        ent = entity_maps(cols, c[:, order], r[order], height, width)[0].permute(1, 2, 0).numpy().astype(np.uint8)
    return ModelView(centers.astype(np.float32), radii, gauss, ent, height, width)


# ---------------------------------------------------------------------------------------
# drawing (the page's clickable image, the CLI's preview)
# ---------------------------------------------------------------------------------------
@dataclass
class Overlay:
    """One entity as drawn over the image; every field optional (the page draws partial entities)."""

    mask: np.ndarray | None = None
    positive: Sequence[Point] = ()
    negative: Sequence[Point] = ()
    path: Sequence[Point] = ()
    trajectory: np.ndarray | None = None  # (K, 2) the model's path (drawn through PCHIP)
    camera: bool = False
    active: bool = False


def _to_display(p, f: float) -> tuple[int, int]:
    x, y = rescale(np.asarray(p, np.float64), f)
    return int(round(x)), int(round(y))


def render_overlay(image: np.ndarray, overlays: Sequence[Overlay], width: int | None = None, curve_points: int = 64) -> np.ndarray:
    """The image (resized to ``width``) with masks tinted, clicks, drawn paths and PCHIP trajectories."""
    from model.maps import interpolate_path

    H, W = image.shape[:2]
    width = int(width or W)
    f = width / W
    dh = max(1, int(round(H * f)))
    base = cv2.resize(image, (width, dh), interpolation=cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA) if f != 1 else image.copy()
    out = base.astype(np.float32)
    thick = max(1, int(round(width / 320)))
    for k, ov in enumerate(overlays):
        if ov.mask is None or ov.camera:
            continue
        col = np.array(color(k), np.float32)
        m = cv2.resize(ov.mask.astype(np.uint8), (width, dh), interpolation=cv2.INTER_NEAREST).astype(bool)
        out[m] = 0.55 * out[m] + 0.45 * col
    out = np.clip(out, 0, 255).astype(np.uint8)
    for k, ov in enumerate(overlays):
        col = tuple(int(c) for c in color(k))
        if ov.camera:
            cv2.rectangle(out, (thick, thick), (width - 1 - thick, dh - 1 - thick), col, 2 * thick + (2 if ov.active else 0))
            cv2.putText(out, f"{k + 1}: camera", (6 * thick + 4, 16 * thick + 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thick, col, thick, cv2.LINE_AA)
        elif ov.mask is not None:
            m = cv2.resize(ov.mask.astype(np.uint8), (width, dh), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            if ov.active:
                cv2.drawContours(out, contours, -1, (255, 255, 255), 3 * thick, cv2.LINE_AA)
            cv2.drawContours(out, contours, -1, col, thick + (1 if ov.active else 0), cv2.LINE_AA)
        for p in ov.positive:
            c = _to_display(p, f)
            cv2.circle(out, c, 4 * thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, c, 3 * thick, col, -1, cv2.LINE_AA)
        for p in ov.negative:
            x, y = _to_display(p, f)
            d = 3 * thick + 1
            cv2.line(out, (x - d, y - d), (x + d, y + d), NEGATIVE_COLOR, 2 * thick, cv2.LINE_AA)
            cv2.line(out, (x - d, y + d), (x + d, y - d), NEGATIVE_COLOR, 2 * thick, cv2.LINE_AA)
        for p in ov.path:  # the clicks as drawn: hollow rings
            cv2.circle(out, _to_display(p, f), 3 * thick, col, thick, cv2.LINE_AA)
        if ov.trajectory is not None and len(ov.trajectory):
            traj = np.asarray(ov.trajectory, np.float64).reshape(-1, 2)
            curve = interpolate_path(traj, curve_points) if len(traj) > 1 else traj
            pts = np.array([_to_display(p, f) for p in curve], np.int32)
            if len(pts) > 1:
                cv2.polylines(out, [pts.reshape(-1, 1, 2)], False, (255, 255, 255), 2 * thick + 2, cv2.LINE_AA)
                cv2.polylines(out, [pts.reshape(-1, 1, 2)], False, col, 2 * thick, cv2.LINE_AA)
                tail = pts[max(0, len(pts) - 6)]
                if tuple(tail) != tuple(pts[-1]):
                    cv2.arrowedLine(out, tuple(int(v) for v in tail), tuple(int(v) for v in pts[-1]), col, 2 * thick, cv2.LINE_AA, tipLength=0.6)
            start = pts[0]
            cv2.circle(out, (int(start[0]), int(start[1])), 4 * thick, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, (int(start[0]), int(start[1])), 3 * thick, col, -1, cv2.LINE_AA)
            cv2.putText(out, str(k + 1), (int(start[0]) + 5 * thick, int(start[1]) - 5 * thick), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45 * thick + 0.1, (255, 255, 255), thick + 1, cv2.LINE_AA)
    return out


def case_overlays(case: DragCase, active: int | None = None) -> list[Overlay]:
    return [Overlay(e.mask, (), (), [tuple(p) for p in e.path], e.trajectory, e.camera, k == active) for k, e in enumerate(case.entities)]


def heat_rgb(gauss: np.ndarray) -> np.ndarray:
    """A [0, 1] map as an RGB heat image."""
    g = (np.clip(gauss, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(g, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------
def trained_checkpoints(wd: Workdir) -> list[dict]:
    """Rows of trained controllers whose weights are in the workdir, newest first."""
    from core.checkpoints import trained

    return trained(wd, with_weights=True)[::-1]


def choose_checkpoint(wd: Workdir, checkpoint_id: str | None = None) -> dict:
    """The ``checkpoints`` row to generate with: ``checkpoint_id``, else the newest trained one."""
    from core import checkpoints as ckpts

    trained = trained_checkpoints(wd)
    if checkpoint_id is None:
        if not trained:
            raise DragError(
                f"the workdir {wd.url} has no trained checkpoint yet: train one first (`draganything train --workdir {wd.url}` "
                "or `draganything pipeline`), or pass --checkpoint ID"
            )
        return trained[0]
    for row in trained:
        if row["checkpoint_id"] == checkpoint_id:
            return row
    table = ckpts.read(wd)
    kinds = dict(zip(table["checkpoint_id"], table["kind"]))
    if kinds.get(checkpoint_id, ckpts.REFERENCE if checkpoint_id in ckpts.REFERENCE_GENERATORS else None) == ckpts.REFERENCE:
        raise DragError(f"'{checkpoint_id}' is a model-free reference generator, not a trained controller; pass a trained checkpoint id")
    known = ", ".join(r["checkpoint_id"] for r in trained) or "none yet"
    if checkpoint_id in set(table["checkpoint_id"]):
        row = table[table["checkpoint_id"] == checkpoint_id].iloc[0]
        raise DragError(
            f"checkpoint '{checkpoint_id}' has no controller weights at {wd.path(str(row['path'] or '?'), 'controlnet')} "
            f"(trained checkpoints with weights: {known})"
        )
    raise DragError(
        f"checkpoint '{checkpoint_id}' is not in {wd.url}/tables/checkpoints (trained: {known}); "
        f"train one with `draganything train --workdir {wd.url}`, or leave --checkpoint out to use the newest"
    )


def checkpoint_hw_frames(checkpoint: dict) -> tuple[int, int, int]:
    """(height, width, frames) the checkpoint's model generates."""
    from tasks.controller import checkpoint_model_settings

    m = checkpoint_model_settings(checkpoint)
    return m.height, m.width, m.num_frames


# ---------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PIPE_LOCK = threading.Lock()  # one generation at a time per process (a pipe's scheduler has state)


def video_relpath(case_id: str, checkpoint_id: str, seed: int, steps: int, settings: dict | None = None) -> str:
    """Where a drag video lives in the workdir: derived from the case digest, the checkpoint and the
    sampling settings (so a changed setting never serves an old video), never from a request."""

    def safe(name: str) -> str:
        return _SAFE.sub("_", str(name)).replace("..", "_").strip("._") or "_"

    tag = ""
    if settings:
        tag = "-" + hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"drag/{safe(case_id)}/{safe(checkpoint_id)}-seed{int(seed)}-steps{int(steps)}{tag}.mp4"


class _StepCounter:
    """Stands in for the pipeline's tqdm bar: counts denoising steps for a callback."""

    def __init__(self, total: int, callback: Callable[[int, int], None]):
        self.total, self.n, self.callback = int(total or 0), 0, callback

    def __enter__(self):
        self.callback(0, self.total)
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        self.n += n
        self.callback(self.n, self.total)


class _counting_steps:
    """Route a pipeline's ``progress_bar`` to a callback for the duration of one call."""

    def __init__(self, pipe, callback: Callable[[int, int], None]):
        self.pipe, self.callback = pipe, callback

    def __enter__(self):
        self.pipe.progress_bar = lambda iterable=None, total=None: _StepCounter(total, self.callback)
        return self

    def __exit__(self, *exc):
        self.pipe.__dict__.pop("progress_bar", None)  # back to the class's method
        return False


def generate_frames(wd: Workdir, checkpoint: dict, item: SuiteItem, cfg: Config, seed: int,
                    progress: Progress | None = None) -> np.ndarray:
    """The video ``(T, H, W, 3)`` uint8 at the item's size, from the checkpoint's controller.

    The model loads once per process (``tasks.generate.get_generator``); the sampling knobs
    come from ``cfg.generate``.
    """
    from tasks.controller import ControllerGenerator
    from tasks.generate import get_generator

    progress = progress or (lambda stage, done, total: None)
    steps = cfg.generate.num_inference_steps
    progress("loading the model", 0, steps)
    with _PIPE_LOCK:
        cached = get_generator(checkpoint, cfg, wd)
        # The cached generator keeps the generate settings it was built with; these are this call's.
        gen = ControllerGenerator(cached.pipe, cached.model, cfg.generate)
        with _counting_steps(gen.pipe, lambda i, n: progress("denoising", i, n)):
            frames = gen(item, int(seed))
    # The model's size -> the user's image size (the page shows the video over the image).
    h, w = item.hw
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in frames])


def generate_video(
    workdir_url: str,
    checkpoint: dict,
    item: SuiteItem,
    cfg: Config,
    seed: int,
    relpath: str,
    progress: Progress | None = None,
) -> dict:
    """:func:`generate_frames`, written as an H.264 mp4 to ``relpath`` in the workdir; returns what was written."""
    progress = progress or (lambda stage, done, total: None)
    wd = Workdir(workdir_url)
    t0 = time.perf_counter()
    frames = generate_frames(wd, checkpoint, item, cfg, seed, progress)
    steps = cfg.generate.num_inference_steps
    progress("writing the video", steps, steps)
    write_mp4(wd, relpath, frames, cfg.generate.fps)
    progress("done", steps, steps)
    return dict(video_path=relpath, frames=int(frames.shape[0]), height=int(frames.shape[1]), width=int(frames.shape[2]),
                seconds=float(time.perf_counter() - t0), checkpoint_id=str(checkpoint["checkpoint_id"]), seed=int(seed))


# --------------------------------------------------------------------------- Ray
class _ProgressBoard:
    """A tiny Ray actor the generation task reports to and the page polls."""

    def __init__(self):
        self.state = {"stage": "queued", "done": 0, "total": 0}

    def set(self, stage: str, done: int, total: int) -> None:
        self.state = {"stage": stage, "done": int(done), "total": int(total)}

    def get(self) -> dict:
        return dict(self.state)


def _generate_task(workdir_url, checkpoint, item, cfg, seed, relpath, board) -> dict:
    def report(stage, done, total):
        board.set.remote(stage, done, total)

    # Ray hands numpy arrays over read-only (zero copy); torch wants writable ones.
    for name in ("image", "masks", "trajectories", "radii"):
        setattr(item, name, np.array(getattr(item, name)))

    return generate_video(workdir_url, checkpoint, item, cfg, seed, relpath, report)


@dataclass
class RemoteGeneration:
    """A generation running as a Ray task: poll its progress, wait for its result."""

    ref: object
    board: object
    relpath: str

    def progress(self) -> dict:
        import ray

        try:
            return ray.get(self.board.get.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - progress is best effort
            return {"stage": "running", "done": 0, "total": 0}

    def wait(self, timeout: float) -> bool:
        import ray

        ready, _ = ray.wait([self.ref], timeout=timeout)
        return bool(ready)

    def result(self) -> dict:
        """The task's result; a :class:`DragError` raised in the task comes back as itself."""
        import ray

        try:
            return ray.get(self.ref)
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Stop the progress actor (the task itself runs to its end)."""
        import ray

        try:
            ray.kill(self.board)
        except Exception:  # noqa: BLE001 - already gone
            pass


def submit(workdir_url: str, checkpoint: dict, item: SuiteItem, cfg: Config, seed: int, relpath: str) -> RemoteGeneration:
    """Start :func:`generate_video` as a Ray task (resources from ``cfg.runtime``) with a progress actor."""
    import ray

    from core.runtime import QUIET_ENV, ensure_ray_held, ray_task_options

    ensure_ray_held(cfg.runtime, {k: QUIET_ENV[k] for k in ("PREFECT_SERVER_ANALYTICS_ENABLED", "RAY_DEDUP_LOGS")})
    board = ray.remote(num_cpus=0)(_ProgressBoard).remote()
    opts = ray_task_options(cfg.runtime)
    opts["max_retries"] = 0  # a failed generation is reported, not silently repeated
    ref = ray.remote(_generate_task).options(**opts).remote(workdir_url, checkpoint, item, cfg, int(seed), relpath, board)
    return RemoteGeneration(ref, board, relpath)


# ---------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------
def check_case_name(name: str) -> str:
    name = (name or "").strip()
    if not CASE_NAME.match(name):
        raise DragError(
            f"case name {name!r} must start with a letter or digit and use only letters, digits, '.', '_' and '-' (at most 64)"
        )
    return name


def save_case(folder: str | os.PathLike, case: DragCase, overwrite: bool = False) -> Path:
    """Write the case in the user-study folder format; the trajectories are the model's (anchored, clipped)."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise DragError(f"{folder} already exists and is not empty; choose another case name")
    write_user_study_case(folder, case.image, case.masks, case.trajectories)
    return folder


def case_zip(case: DragCase, name: str) -> bytes:
    """The saved case as a zip (one folder ``name/``), for downloading."""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        write_user_study_case(root, case.image, case.masks, case.trajectories)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(root.iterdir()):
                z.write(p, f"{name}/{p.name}")
    return buf.getvalue()


def cases_root(cfg: Config, wd: Workdir) -> str:
    """Where the page saves cases: drag.cases_dir, else evaluate.user_study_dir, else <workdir>/user-study."""
    return cfg.drag.cases_dir or cfg.evaluate.user_study_dir or wd.path("user-study")


def case_summary(case: DragCase) -> str:
    """One JSON line describing the case (for the CLI's output)."""
    return json.dumps({
        "entities": [
            {"camera": e.camera, "method": e.method, "area_px": int(e.mask.sum()), "radius_px": round(e.radius, 1),
             "trajectory": np.round(e.trajectory, 1).tolist()}
            for e in case.entities
        ],
        "notes": case.notes,
    })
