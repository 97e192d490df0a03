"""Which controller a drag uses: an explicit id, else the newest trained one whose weights are here."""

from __future__ import annotations

from core.tables import Workdir
from tasks.drag.common import DragError


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
