"""Generation: :func:`run_drag`, the one way a drag becomes a video (the CLI and the Drag page).

The model loads once per process (``tasks.generate.get_generator``); the video comes out at
the image's size as an H.264 mp4 at a path derived from the case, never from a request.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time

import cv2
import numpy as np

from core.config import Config
from core.media import write_mp4
from core.tables import Workdir
from tasks.drag.common import Progress
from tasks.suites import SuiteItem

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
        frames = gen(item, int(seed), on_step=lambda i, n: progress("denoising", i, n))
    # The model's size -> the user's image size (the page shows the video over the image).
    h, w = item.hw
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in frames])


def run_drag(
    workdir_url: str,
    checkpoint: dict,
    item: SuiteItem,
    cfg: Config,
    seed: int,
    relpath: str,
    progress: Progress | None = None,
    out_url: str | None = None,
) -> dict:
    """A drag's video: :func:`generate_frames` with the workdir's checkpoint, written as an H.264 mp4 to
    ``relpath`` in ``out_url`` (default: the workdir); returns what was written.

    The Drag page runs it in its process or as a Ray task (``tasks.drag.remote.submit``), the CLI
    through :func:`tasks.drag.files.drag_files`.
    """
    progress = progress or (lambda stage, done, total: None)
    wd = Workdir(workdir_url)
    t0 = time.perf_counter()
    frames = generate_frames(wd, checkpoint, item, cfg, seed, progress)
    steps = cfg.generate.num_inference_steps
    progress("writing the video", steps, steps)
    write_mp4(Workdir(out_url) if out_url else wd, relpath, frames, cfg.generate.fps)
    progress("done", steps, steps)
    return dict(video_path=relpath, frames=int(frames.shape[0]), height=int(frames.shape[1]), width=int(frames.shape[2]),
                seconds=float(time.perf_counter() - t0), checkpoint_id=str(checkpoint["checkpoint_id"]), seed=int(seed))
