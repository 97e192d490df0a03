"""The generate stage's unit of work: benchmark items in, videos + ``samples`` rows out.

A generator maps (item, seed) to frames (L, H, W, 3) uint8. ``static`` and ``warp``
need no model (floors and ceilings for the metrics); a checkpoint id names a
trained controller. A generator is built once per worker process and reused.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Protocol

import numpy as np

from core.config import Config
from core.media import write_frames, write_mp4
from core.tables import Workdir, now_utc
from eval.reference import static_video, warp_video
from eval.trackers import tracker_for
from tasks.benchmarks import BENCHMARKS, BenchmarkItem, ItemError, folder_items, labels_items

STAGE = "generate"
REFERENCE_GENERATORS = ("static", "warp")


class Generator(Protocol):
    """(item, seed) -> one frame per point of the item's paths."""

    def __call__(self, item: BenchmarkItem, seed: int) -> np.ndarray: ...


class StaticGenerator:
    """The first frame repeated: no motion at all (the ObjMC ceiling)."""

    def __call__(self, item: BenchmarkItem, seed: int) -> np.ndarray:
        return static_video(item.image, item.trajectories.shape[1])


class WarpGenerator:
    """Each entity's cut-out moved along its trajectory (near-perfect control, poor video)."""

    def __call__(self, item: BenchmarkItem, seed: int) -> np.ndarray:
        return warp_video(item.image, item.masks, item.trajectories)


def reference_checkpoint_row(name: str) -> dict:
    """A ``checkpoints`` row for a model-free generator, so it ranks beside real ones."""
    config = json.dumps({"generator": name})
    return dict(checkpoint_id=name, parent=None, config=config, config_hash=name, step=0, path=None, created_at=now_utc())


_CACHE: dict[str, Generator] = {}


def get_generator(checkpoint: dict, cfg: Config, workdir: Workdir) -> Generator:
    """The generator of a ``checkpoints`` row, built once per process."""
    key = f"{workdir.url}|{checkpoint['checkpoint_id']}|{checkpoint.get('config_hash')}"
    if key not in _CACHE:
        kind = json.loads(checkpoint["config"] or "{}").get("generator")  # set on model-free rows
        if kind == "static":
            _CACHE[key] = StaticGenerator()
        elif kind == "warp":
            _CACHE[key] = WarpGenerator()
        else:
            from tasks.controller import ControllerGenerator

            _CACHE[key] = ControllerGenerator.from_checkpoint(workdir, checkpoint, cfg)
    return _CACHE[key]


def load_benchmark(
    workdir: Workdir, name: str, cfg: Config, item_ids: list[str] | None = None
) -> tuple[list[BenchmarkItem], list[tuple[str, str]]]:
    """The items of a benchmark (all, or ``item_ids``), and (item, reason) for those that cannot be read."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark '{name}'; benchmarks: {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    only = set(item_ids) if item_ids is not None else None
    if spec.kind == "labels":
        ev = cfg.evaluate
        tracker = tracker_for(ev.tracker) if ev.ground_truth == "tracked" else None
        return labels_items(workdir, spec, only, tracker, ev.grid_size, ev.add_centers), []
    folder = cfg.evaluate.user_study_dir
    if not folder:
        raise FileNotFoundError("the user-study benchmark needs evaluate.user_study_dir: a folder of cases (demo.jpg, demo.json, masks)")
    return folder_items(folder, spec.resolution, spec.frames, only=only)


def sample_paths(checkpoint_id: str, benchmark: str, item_id: str, seed: int) -> tuple[str, str]:
    base = f"samples/{checkpoint_id}/{benchmark}/{item_id}/seed{seed}"
    return f"{base}.mp4", f"{base}.npz"


def generate_items(
    workdir_url: str,
    checkpoint: dict,
    benchmark: str,
    item_ids: list[str],
    cfg: Config,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Videos for (checkpoint, benchmark, item, seed); skips what exists. -> (samples rows, rejects)."""
    wd = Workdir(workdir_url)
    cid = checkpoint["checkpoint_id"]
    wanted = set(item_ids)
    items, bad = load_benchmark(wd, benchmark, cfg, item_ids)
    rows, rejects = [], [dict(stage=STAGE, item=f"{cid}/{benchmark}/{i}", reason=r, at=now_utc()) for i, r in bad if i in wanted]
    done = {k for k in wd.keys("samples") if k[0] == cid and k[1] == benchmark}
    generator = None
    for item in (i for i in items if i.item_id in wanted):
        for seed in cfg.generate.seeds:
            if (cid, benchmark, item.item_id, seed) in done:
                continue
            mp4, npz = sample_paths(cid, benchmark, item.item_id, seed)
            try:
                generator = generator or get_generator(checkpoint, cfg, wd)
                t0 = time.perf_counter()
                frames = generator(item, seed)
                seconds = time.perf_counter() - t0
            except (ItemError, ValueError) as err:
                rejects.append(dict(stage=STAGE, item=f"{cid}/{benchmark}/{item.item_id}/seed{seed}", reason=str(err), at=now_utc()))
                continue
            write_frames(wd, npz, frames)
            write_mp4(wd, mp4, frames, cfg.generate.fps)
            rows.append(
                dict(
                    checkpoint_id=cid,
                    benchmark=benchmark,
                    item_id=item.item_id,
                    seed=int(seed),
                    video_path=mp4,
                    frames=int(frames.shape[0]),
                    height=int(frames.shape[1]),
                    width=int(frames.shape[2]),
                    seconds=float(seconds),
                )
            )
        if progress:
            progress(1)
    return rows, rejects
