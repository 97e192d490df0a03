"""The ``checkpoints`` table's rules: what a checkpoint id names, and which ones a run evaluates.

A checkpoint id is one of:

- a trained controller (``run-<hash>-s<step>``, written by the train stage, weights under ``path``);
- a model-free reference generator, ``static`` or ``warp`` (floors and ceilings for the metrics);
- ``<id>~nocontrol``: the model of ``<id>`` with its control switched off (the baseline a trained
  controller must beat).

References and control-off rows are registered the first time they are resolved, so every
checkpoint the metrics name has a row.
"""

from __future__ import annotations

import json
from typing import Literal

from core.tables import Workdir, now_utc

REFERENCE_GENERATORS = ("static", "warp")
NO_CONTROL = "~nocontrol"


class UnknownCheckpoint(ValueError):
    """A checkpoint id that is not in the ``checkpoints`` table."""


def reference_row(name: str) -> dict:
    """A ``checkpoints`` row for a model-free generator, so it ranks beside real ones."""
    config = json.dumps({"generator": name})
    return dict(checkpoint_id=name, parent=None, config=config, config_hash=name, step=0, path=None, created_at=now_utc())


def control_off_row(parent: dict) -> dict:
    """The row of ``parent``'s model with its control switched off (``model.conditioning_scale = 0``)."""
    config = json.loads(parent["config"])
    config["model"]["conditioning_scale"] = 0.0
    return {**parent, "checkpoint_id": parent["checkpoint_id"] + NO_CONTROL, "parent": parent["checkpoint_id"],
            "config": json.dumps(config), "config_hash": f"{parent['config_hash']}{NO_CONTROL}", "created_at": now_utc()}


def resolve(wd: Workdir, checkpoint_id: str) -> dict:
    """The ``checkpoints`` row of an id; references and control-off rows register themselves."""
    if checkpoint_id in REFERENCE_GENERATORS:
        wd.append("checkpoints", [reference_row(checkpoint_id)])
    if checkpoint_id.endswith(NO_CONTROL):
        wd.append("checkpoints", [control_off_row(resolve(wd, checkpoint_id[: -len(NO_CONTROL)]))])
    table = wd.read("checkpoints")
    row = table[table["checkpoint_id"] == checkpoint_id]
    if row.empty:
        known = ", ".join(sorted(table["checkpoint_id"])) or "none yet"
        raise UnknownCheckpoint(
            f"checkpoint '{checkpoint_id}' is not in {wd.url}/tables/checkpoints (known: {known}); "
            f"train one with `draganything train`, or use 'static' or 'warp'"
        )
    return row.iloc[0].to_dict()


def latest_of_config(wd: Workdir, config_hash: str) -> dict | None:
    """The newest checkpoint (highest step) trained with this config, or None."""
    table = wd.read("checkpoints")
    mine = table[table["config_hash"] == config_hash].sort_values(["step", "created_at"])
    return None if mine.empty else mine.iloc[-1].to_dict()


def to_evaluate(
    wd: Workdir, suite: str, select: Literal["missing", "latest", "all"], references: bool, baselines: bool = True
) -> list[str]:
    """Which checkpoints a pipeline run generates and scores on ``suite``."""
    table = wd.read("checkpoints").sort_values("created_at")
    trained = [c for c in table["checkpoint_id"] if c not in REFERENCE_GENERATORS and NO_CONTROL not in c]
    if select == "latest":
        chosen = trained[-1:]
    else:
        chosen = trained
    if references:
        chosen = list(REFERENCE_GENERATORS) + [c for c in chosen if c not in REFERENCE_GENERATORS]
    if baselines and trained:
        chosen.append(trained[-1] + NO_CONTROL)  # the latest model with control switched off
    if select == "missing":
        scored = {(c, b) for c, b, m, _ in wd.keys("metrics") if m == "objmc"}
        chosen = [c for c in chosen if (c, suite) not in scored]
    return chosen
