"""Media in a workdir: blobs, npz arrays, the frames cache, clip resizing, H.264 videos.

Every file goes through a ``Workdir`` (a local path or an fsspec URL) and appears
whole or not at all (``Workdir.write_atomic``). Paths are relative to the workdir,
as the tables hold them.

- blobs: :func:`read_blob` / :func:`write_blob` (bytes);
- arrays: :func:`read_npz` / :func:`write_npz` (one ``.npz`` of named arrays);
- the frames cache (:func:`frames_cache_path`, :func:`save_cached_clip`,
  :func:`load_cached_clip`): a labelled clip at label resolution, frames ``(T, H, W, 3)``
  uint8 and panoptic ids ``(T, H, W)`` int32, so no stage decodes JPEGs twice;
- :func:`resize_clip`: a clip at another size (area-averaged frames, nearest ids);
- generated videos: :func:`write_frames` / :func:`read_frames` (the raw frames) and
  :func:`write_mp4`, the one H.264 writer (samples, drag videos, dashboard overlays).
"""

from __future__ import annotations

import io
import os
import tempfile

import cv2
import numpy as np

from core.paths import file_name
from core.tables import Workdir

# --- blobs and arrays -----------------------------------------------------------------


def read_blob(wd: Workdir, relpath: str) -> bytes:
    with wd.fs.open(wd.path(relpath), "rb") as f:
        return f.read()


def write_blob(wd: Workdir, relpath: str, data: bytes) -> None:
    wd.write_atomic(wd.path(relpath), lambda f: f.write(data))


def read_npz(wd: Workdir, relpath: str) -> dict[str, np.ndarray]:
    """The named arrays of one ``.npz`` file in the workdir."""
    with np.load(io.BytesIO(read_blob(wd, relpath))) as z:
        return {k: z[k] for k in z.files}


def write_npz(wd: Workdir, relpath: str, **arrays: np.ndarray) -> None:
    """Named arrays as one ``.npz`` file (uncompressed), written atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_blob(wd, relpath, buf.getbuffer())


# --- the frames cache -----------------------------------------------------------------


def frames_cache_path(dataset: str, split: str, video_id: str) -> str:
    """``frames/<dataset>/<split>/<video>.npz``; a name too long for one path component is shortened with its hash."""
    return f"frames/{dataset}/{split}/{file_name(video_id, '.npz')}"


def save_cached_clip(wd: Workdir, relpath: str, frames: np.ndarray, ids: np.ndarray) -> None:
    """The clip at label resolution, so training never decodes JPEGs again."""
    write_npz(wd, relpath, frames=frames, ids=ids.astype(np.int32))


def load_cached_clip(wd: Workdir, relpath: str) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, H, W, 3) uint8, ids (T, H, W) int32) of a cached clip."""
    z = read_npz(wd, relpath)
    return z["frames"], z["ids"]


def resize_clip(frames: np.ndarray, ids: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A cached clip at another size: area-averaged frames, nearest-neighbour ids."""
    h, w = hw
    if frames.shape[1:3] == (h, w):
        return frames, ids
    f = np.stack([cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA) for x in frames])
    m = np.stack([cv2.resize(x, (w, h), interpolation=cv2.INTER_NEAREST_EXACT) for x in ids])
    return f, m


# --- videos ---------------------------------------------------------------------------


def write_frames(wd: Workdir, relpath: str, frames: np.ndarray) -> None:
    """A video's raw frames ``(T, H, W, 3)`` uint8 (what evaluation reads: no codec loss)."""
    write_npz(wd, relpath, frames=frames)


def read_frames(wd: Workdir, relpath: str) -> np.ndarray:
    return read_npz(wd, relpath)["frames"]


def write_mp4(wd: Workdir, relpath: str, frames: np.ndarray, fps: float) -> None:
    """Frames ``(T, H, W, 3)`` uint8 as an MP4 every browser plays, written atomically.

    The settings, for every video the project writes: H.264 (libx264) at CRF 18,
    yuv420p, ``+faststart`` (playable while it downloads), one encoder thread (Ray
    tasks run side by side), odd sizes scaled up to even ones (yuv420p needs them),
    fps at least 1.
    """
    import imageio_ffmpeg

    T, H, W, _ = frames.shape
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "video.mp4")
        writer = imageio_ffmpeg.write_frames(
            path,
            (W, H),
            fps=max(fps, 1),
            codec="libx264",
            pix_fmt_out="yuv420p",
            macro_block_size=2,
            quality=None,
            output_params=["-crf", "18", "-movflags", "+faststart", "-threads", "1"],
            ffmpeg_log_level="error",
        )
        writer.send(None)
        for f in frames:
            writer.send(np.ascontiguousarray(f))
        writer.close()
        with open(path, "rb") as src:
            data = src.read()
    write_blob(wd, relpath, data)
