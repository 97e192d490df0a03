"""What a video was asked to do, frozen at generate time: the ``conditions`` table.

One row per (checkpoint, suite, item, seed), like ``samples``: the entity ids, the
trajectories the generator was given (which are the ground truth ObjMC scores against),
their visibility, the start points of the tracks, radii, frame count and size, the
evaluation size, the frames-cache reference of the real clip, how the trajectories were
made (``ground_truth``: protocol, tracker and rules) and the reader's notes. The first
frame and the masks go to ``conditions/<checkpoint>/<suite>/<item>.npz``
(``inputs_path``). ``evaluate`` reads this and never recomputes a ground truth with the
settings of the day.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.media import read_npz, write_npz
from core.paths import file_name
from core.tables import Workdir, now_utc
from tasks.suites import SuiteItem


def inputs_path(checkpoint_id: str, suite: str, item_id: str) -> str:
    return f"conditions/{checkpoint_id}/{suite}/{file_name(item_id, '.npz')}"


def write_inputs(wd: Workdir, relpath: str, item: SuiteItem) -> None:
    """The first frame and the entity masks given to the generator (what the Compare page and audits need)."""
    if not wd.exists(relpath):
        write_npz(wd, relpath, image=item.image, masks=np.asarray(item.masks, bool))


def read_inputs(wd: Workdir, relpath: str) -> tuple[np.ndarray, np.ndarray]:
    z = read_npz(wd, relpath)
    return z["image"], z["masks"]


def condition_row(checkpoint_id: str, suite: str, item: SuiteItem, seed: int) -> dict:
    E, L = item.trajectories.shape[:2]
    starts = item.starts if item.starts is not None else item.trajectories[:, 0]
    return dict(
        checkpoint_id=checkpoint_id,
        suite=suite,
        item_id=item.item_id,
        seed=int(seed),
        entity_ids=[int(e) for e in item.entity_ids],
        trajectories=np.asarray(item.trajectories, np.float32).tolist(),
        visible=np.asarray(item.visible, bool).tolist(),
        starts=np.asarray(starts, np.float32).reshape(E, 2).tolist(),
        radii=[float(r) for r in item.radii],
        frames=int(L),
        height=int(item.hw[0]),
        width=int(item.hw[1]),
        eval_height=int(item.orig_hw[0]),
        eval_width=int(item.orig_hw[1]),
        inputs_path=inputs_path(checkpoint_id, suite, item.item_id),
        reference=item.reference,
        ground_truth=item.ground_truth,
        protocol=item.protocol,
        notes=list(item.notes),
        created_at=now_utc(),
    )


def read_conditions(wd: Workdir, checkpoint_id: str, suite: str, item_ids: list[str] | None = None) -> pd.DataFrame:
    import pyarrow.compute as pc

    filt = (pc.field("checkpoint_id") == checkpoint_id) & (pc.field("suite") == suite)
    if item_ids is not None:
        filt &= pc.field("item_id").isin(sorted(set(item_ids)))
    return wd.read("conditions", filter=filt)


def trajectories_of(row) -> np.ndarray:
    """(E, L, 2) float64 from a conditions row."""
    return np.array([[list(p) for p in traj] for traj in row["trajectories"]], np.float64).reshape(len(row["entity_ids"]), -1, 2)


def visible_of(row) -> np.ndarray:
    return np.array([list(v) for v in row["visible"]], bool).reshape(len(row["entity_ids"]), -1)


def starts_of(row) -> np.ndarray:
    return np.array([list(p) for p in row["starts"]], np.float64).reshape(-1, 2)
