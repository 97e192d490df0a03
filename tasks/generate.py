"""The generate stage's unit of work: suite items in, videos + ``samples`` rows out.

A generator maps (item, seed) to frames (L, H, W, 3) uint8. ``static`` and ``warp``
need no model (floors and ceilings for the metrics); a checkpoint id names a
trained controller. A generator is built once per worker process and reused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from core import checkpoints as ckpts
from core.config import Config
from core.media import write_frames, write_mp4
from core.rejects import ItemError, is_infrastructure_error, reject_row
from core.suites import SUITES
from core.tables import Workdir
from eval.catalog import protocol_of, tracker_of
from eval.reference import static_video, warp_video
from eval.trackers import tracker_for
from tasks.conditions import condition_row, write_inputs
from tasks.suites import SuiteItem, labels_items
from tasks.user_study import folder_items

STAGE = "generate"
FIX_HINT = "fix the item (or the checkpoint) as the reason says, then run `draganything generate` again: only missing videos are made"


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


def get_generator(checkpoint: dict, cfg: Config, wd: Workdir) -> Generator:
    """The generator of a ``checkpoints`` row, built once per process."""
    key = f"{wd.url}|{checkpoint['checkpoint_id']}|{checkpoint.get('config_hash')}"
    if key not in _CACHE:
        if ckpts.kind(checkpoint) == ckpts.REFERENCE:  # its config names the generator
            _CACHE[key] = REFERENCES[json.loads(checkpoint["config"])["generator"]]()
        else:
            from tasks.controller import ControllerGenerator

            _CACHE[key] = ControllerGenerator.from_checkpoint(wd, checkpoint, cfg)
    return _CACHE[key]


def load_suite(
    wd: Workdir, name: str, cfg: Config, item_ids: list[str] | None = None
) -> tuple[list[SuiteItem], list[tuple[str, str]]]:
    """The items of a suite (all, or ``item_ids``), and (item, reason) for those that cannot be read.

    The ground truth of each item is made here, with the configured protocol, and frozen in
    the ``conditions`` table when its video is generated.
    """
    if name not in SUITES:
        raise ValueError(f"unknown suite '{name}'; suites: {', '.join(SUITES)}")
    spec = SUITES[name]
    only = set(item_ids) if item_ids is not None else None
    if spec.kind == "labels":
        protocol = protocol_of(cfg)
        tracker = tracker_for(cfg.evaluate.tracker) if protocol.ground_truth == "tracked" else None
        return labels_items(wd, spec, only, protocol, tracker, tracker_of(cfg)), []
    folder = cfg.evaluate.user_study_dir
    if not folder:
        raise FileNotFoundError("the user-study suite needs evaluate.user_study_dir: a folder of cases (demo.jpg, demo.json, masks)")
    items, bad = folder_items(folder, spec.resolution, spec.frames, only=only, fit=cfg.evaluate.user_study_fit,
                              max_pixels=cfg.labels.max_frame_pixels)
    for it in items:
        it.protocol = cfg.evaluate.protocol
    return items, bad


def reject_item(checkpoint_id: str, suite: str, item_id: str, seed: int | None = None) -> str:
    """The ``rejects`` item of an item that could not be read (no seed) or of one (item, seed) that could not be generated."""
    return f"{checkpoint_id}/{suite}/{item_id}" + ("" if seed is None else f"/seed{seed}")


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
) -> tuple[list[dict], list[dict], list[dict]]:
    """Videos for (checkpoint, suite, item, seed); skips what exists. -> (samples, conditions, rejects).

    Each video's conditions row (what it was asked to do) is returned with its samples row;
    write the conditions first. An item that fails for any reason but the machine's (disk,
    memory) is a reject naming the exception, and the others go on.
    """
    wd = Workdir(workdir_url)
    cid = checkpoint["checkpoint_id"]
    wanted = set(item_ids)
    items, bad = load_suite(wd, suite, cfg, item_ids)
    rows, conds = [], []
    digest = cfg.digest()
    rejects = [reject_row(STAGE, reject_item(cid, suite, i), ItemError(r), FIX_HINT, digest) for i, r in bad if i in wanted]
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
                if frames.shape[0] != item.trajectories.shape[1]:
                    raise ItemError(f"the generator made {frames.shape[0]} frames for a {item.trajectories.shape[1]}-point path; every frame needs its point")
            except Exception as err:  # noqa: BLE001 - any failure of one item is that item's reject
                if is_infrastructure_error(err):
                    raise  # the machine (disk full, out of memory ...), not the item: fail the task (Ray retries it)
                rejects.append(reject_row(STAGE, reject_item(cid, suite, item.item_id, seed), err, FIX_HINT, digest))
                continue
            cond = condition_row(cid, suite, item, seed)
            write_inputs(wd, cond["inputs_path"], item)
            write_frames(wd, npz, frames)
            write_mp4(wd, mp4, frames, cfg.generate.fps)
            conds.append(cond)
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
    return rows, conds, rejects
