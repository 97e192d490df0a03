"""The generate stage's unit of work: suite items in, videos + ``samples`` rows out.

A generator maps (item, seed) to frames (L, H, W, 3) uint8. ``static`` and ``warp``
need no model (floors and ceilings for the metrics); a checkpoint id names a
trained controller. A generator is built once per worker process and reused.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Protocol

import numpy as np

from core import checkpoints as ckpts
from core.config import Config
from core.media import write_frames, write_mp4
from core.tables import Workdir, now_utc
from eval.reference import static_video, warp_video
from eval.trackers import tracker_for
from tasks.suites import SUITES, SuiteItem, ItemError, folder_items, labels_items

STAGE = "generate"


class Generator(Protocol):
    """(item, seed) -> one frame per point of the item's paths."""

    def __call__(self, item: SuiteItem, seed: int) -> np.ndarray: ...


class StaticGenerator:
    """The first frame repeated: no motion at all (the ObjMC ceiling)."""

    def __call__(self, item: SuiteItem, seed: int) -> np.ndarray:
        return static_video(item.image, item.trajectories.shape[1])


class WarpGenerator:
    """Each entity's cut-out moved along its trajectory (near-perfect control, poor video)."""

    def __call__(self, item: SuiteItem, seed: int) -> np.ndarray:
        return warp_video(item.image, item.masks, item.trajectories)


REFERENCES: dict[str, type] = {"static": StaticGenerator, "warp": WarpGenerator}  # core.checkpoints.REFERENCE_GENERATORS
_CACHE: dict[str, Generator] = {}


def get_generator(checkpoint: dict, cfg: Config, workdir: Workdir) -> Generator:
    """The generator of a ``checkpoints`` row, built once per process."""
    key = f"{workdir.url}|{checkpoint['checkpoint_id']}|{checkpoint.get('config_hash')}"
    if key not in _CACHE:
        if ckpts.kind(checkpoint) == ckpts.REFERENCE:  # its config names the generator
            _CACHE[key] = REFERENCES[json.loads(checkpoint["config"])["generator"]]()
        else:
            from tasks.controller import ControllerGenerator

            _CACHE[key] = ControllerGenerator.from_checkpoint(workdir, checkpoint, cfg)
    return _CACHE[key]


def load_suite(
    workdir: Workdir, name: str, cfg: Config, item_ids: list[str] | None = None
) -> tuple[list[SuiteItem], list[tuple[str, str]]]:
    """The items of a suite (all, or ``item_ids``), and (item, reason) for those that cannot be read."""
    if name not in SUITES:
        raise ValueError(f"unknown suite '{name}'; suites: {', '.join(SUITES)}")
    spec = SUITES[name]
    only = set(item_ids) if item_ids is not None else None
    if spec.kind == "labels":
        ev = cfg.evaluate
        tracker = tracker_for(ev.tracker) if ev.ground_truth == "tracked" else None
        return labels_items(workdir, spec, only, tracker, ev.grid_size, ev.add_centers), []
    folder = cfg.evaluate.user_study_dir
    if not folder:
        raise FileNotFoundError("the user-study suite needs evaluate.user_study_dir: a folder of cases (demo.jpg, demo.json, masks)")
    return folder_items(folder, spec.resolution, spec.frames, only=only)


def sample_paths(checkpoint_id: str, suite: str, item_id: str, seed: int) -> tuple[str, str]:
    base = f"samples/{checkpoint_id}/{suite}/{item_id}/seed{seed}"
    return f"{base}.mp4", f"{base}.npz"


def pending_items(wd: Workdir, checkpoint_id: str, suite: str, cfg: Config) -> tuple[list[str], int]:
    """(ids of the items that lack a sample for some seed, or cannot be read, how many items there are)."""
    items, bad = load_suite(wd, suite, cfg)
    seeds = set(cfg.generate.seeds)
    done: dict[str, set] = {}
    for cid, b, item, seed in wd.keys("samples"):
        if cid == checkpoint_id and b == suite:
            done.setdefault(item, set()).add(seed)
    todo = [i.item_id for i in items if not seeds <= done.get(i.item_id, set())]
    todo += [item for item, _ in bad]  # their rejects are written by generate_items
    return todo, len(items) + len(bad)


def generate_items(
    workdir_url: str,
    checkpoint: dict,
    suite: str,
    item_ids: list[str],
    cfg: Config,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Videos for (checkpoint, suite, item, seed); skips what exists. -> (samples rows, rejects)."""
    wd = Workdir(workdir_url)
    cid = checkpoint["checkpoint_id"]
    wanted = set(item_ids)
    items, bad = load_suite(wd, suite, cfg, item_ids)
    rows, rejects = [], [dict(stage=STAGE, item=f"{cid}/{suite}/{i}", reason=r, at=now_utc()) for i, r in bad if i in wanted]
    done = {k for k in wd.keys("samples") if k[0] == cid and k[1] == suite}
    generator = None
    for item in (i for i in items if i.item_id in wanted):
        for seed in cfg.generate.seeds:
            if (cid, suite, item.item_id, seed) in done:
                continue
            mp4, npz = sample_paths(cid, suite, item.item_id, seed)
            try:
                generator = generator or get_generator(checkpoint, cfg, wd)
                t0 = time.perf_counter()
                frames = generator(item, seed)
                seconds = time.perf_counter() - t0
            except (ItemError, ValueError) as err:
                rejects.append(dict(stage=STAGE, item=f"{cid}/{suite}/{item.item_id}/seed{seed}", reason=str(err), at=now_utc()))
                continue
            write_frames(wd, npz, frames)
            write_mp4(wd, mp4, frames, cfg.generate.fps)
            rows.append(
                dict(
                    checkpoint_id=cid,
                    suite=suite,
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
