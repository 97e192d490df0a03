"""A picture of control: one evaluation-suite item's first frame with its entities and paths, then the
frames of a controller's video with control on and the same model's with control off, side by side.

``control_strip`` reads what the generate stage wrote (``samples`` rows and their raw frames);
``draganything strip`` saves it as a PNG. Each video frame shows where every entity should be
in that frame (a ring) and the path so far, so a reader can see which video follows it.
"""

from __future__ import annotations

import cv2
import numpy as np

from core.checkpoints import NO_CONTROL
from core.config import Config
from core.media import read_frames
from core.tables import Workdir
from tasks.drag import Overlay, color, render_overlay
from tasks.generate import load_suite

LABEL_W = 92


def _sample_frames(wd: Workdir, checkpoint_id: str, suite: str, item_id: str, seed: int) -> np.ndarray:
    s = wd.read("samples")
    s = s[(s["checkpoint_id"] == checkpoint_id) & (s["suite"] == suite) & (s["item_id"] == item_id) & (s["seed"] == seed)]
    if s.empty:
        raise ValueError(f"no video of '{checkpoint_id}' for item '{item_id}' (seed {seed}) on '{suite}' in {wd.url}; "
                         f"run `draganything generate --checkpoint {checkpoint_id} --suite {suite}` first")
    return read_frames(wd, s.iloc[0]["video_path"].replace(".mp4", ".npz"))


def _label(img: np.ndarray, text: str) -> np.ndarray:
    pad = np.full((img.shape[0], LABEL_W, 3), 255, np.uint8)
    for k, line in enumerate(text.split("\n")):
        cv2.putText(pad, line, (4, 18 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([pad, img], 1)


def _marked(frames: np.ndarray, paths: np.ndarray, item_hw: tuple[int, int], size: int) -> np.ndarray:
    """Frames upscaled to ``size`` px high, with each entity's target point of that frame (ring) and its path so far."""
    T, H, W = frames.shape[:3]
    f = size / H
    sx, sy = W / item_hw[1], H / item_hw[0]
    out = []
    for t in range(T):
        img = cv2.resize(frames[t], (int(round(W * f)), size), interpolation=cv2.INTER_CUBIC)
        for k, path in enumerate(paths):
            pts = [(int(round(((x + 0.5) * sx) * f - 0.5)), int(round(((y + 0.5) * sy) * f - 0.5))) for x, y in path[: t + 1]]
            col = tuple(int(c) for c in color(k))
            if len(pts) > 1:
                cv2.polylines(img, [np.array(pts, np.int32).reshape(-1, 1, 2)], False, col, 1, cv2.LINE_AA)
            cv2.circle(img, pts[-1], 6, (255, 255, 255), 2, cv2.LINE_AA)
            cv2.circle(img, pts[-1], 6, col, 1, cv2.LINE_AA)
        out.append(img)
    gap = np.full((size, 2, 3), 255, np.uint8)
    return np.concatenate([x for img in out for x in (img, gap)][:-1], 1)


def control_strip(wd: Workdir, cfg: Config, checkpoint_id: str, item_ids: list[str], suite: str = "sample", seed: int = 0,
                  size: int = 128, moving_only: float = 0.15) -> np.ndarray:
    """The strip of ``item_ids`` (one block each: first frame, control on, control off) as an RGB image.

    Entities are drawn when they travel more than ``moving_only`` of the frame's short side
    (the movers the eye should follow); all entities are conditioned in the videos.
    """
    items = {i.item_id: i for i in load_suite(wd, suite, cfg, item_ids)[0]}
    blocks = []
    for item_id in item_ids:
        if item_id not in items:
            raise ValueError(f"item '{item_id}' is not in suite '{suite}' of {wd.url}")
        it = items[item_id]
        on = _sample_frames(wd, checkpoint_id, suite, item_id, seed)
        off = _sample_frames(wd, checkpoint_id + NO_CONTROL, suite, item_id, seed)
        travel = np.linalg.norm(it.trajectories[:, -1] - it.trajectories[:, 0], axis=-1)
        show = np.flatnonzero(travel > moving_only * min(it.hw)) if (travel > moving_only * min(it.hw)).any() else np.arange(len(travel))
        first = render_overlay(it.image, [Overlay(it.masks[k], (), (), [], it.trajectories[k]) for k in show],
                               width=int(round(size * it.hw[1] / it.hw[0])))
        first = cv2.resize(first, (int(round(size * it.hw[1] / it.hw[0])), size), interpolation=cv2.INTER_AREA)
        rows = [_marked(v, it.trajectories[show], it.hw, size) for v in (on, off)]
        w = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
        left = np.concatenate([_label(first, f"{item_id}\nfirst frame\n+ paths"),
                               np.full((size, first.shape[1] + LABEL_W, 3), 255, np.uint8)], 0)
        right = np.concatenate([_label(rows[0], "control on"), _label(rows[1], "control off")], 0)
        blocks.append(np.concatenate([left, np.full((2 * size, 6, 3), 255, np.uint8), right], 1))
        blocks.append(np.full((8, blocks[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(blocks[:-1], 0)


def save_png(path, image: np.ndarray) -> None:
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
