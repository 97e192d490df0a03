"""Checkpoints: what a ``checkpoints`` row is, how one is made, named, found and chosen.

Every row has a ``kind``:

- ``trained``: a controller the train stage wrote (id ``run-<hash>-s<step>``, weights under ``path``);
- ``reference``: a model-free generator, ``static`` or ``warp`` (floors and ceilings for the metrics);
- ``control-off``: ``<id>~nocontrol``, the model of ``<id>`` with its control switched off (the
  baseline a trained controller must beat).

This module is the one place that builds rows (:func:`checkpoint_row` and its three kinds), names a
training run (:func:`run_id`), and decides what a checkpoint is (:func:`read` classifies rows written
before the ``kind`` column existed, once, as they are read). References and control-off rows are
registered the first time they are resolved, so every checkpoint the metrics name has a row.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import pandas as pd

from core.config import Config
from core.tables import Workdir, now_utc

TRAINED, REFERENCE, CONTROL_OFF, IMPORTED = "trained", "reference", "control-off", "imported"
KINDS = (TRAINED, REFERENCE, CONTROL_OFF, IMPORTED)
CONTROLLERS = (TRAINED, IMPORTED)  # rows with controller weights every stage uses alike (``imported``: converted, not trained here)
REFERENCE_GENERATORS = ("static", "warp")
NO_CONTROL = "~nocontrol"


class UnknownCheckpoint(ValueError):
    """A checkpoint id that is not in the ``checkpoints`` table."""


# --- names ----------------------------------------------------------------------------


def run_key(cfg: Config) -> str:
    """The config without ``train.steps`` (how long, not what): part of the run id."""
    payload = cfg.model_dump(mode="json", exclude={"profile"})
    payload["train"].pop("steps", None)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def run_id(cfg: Config, origin: str | None) -> str:
    """A training run: the same config trained from the same origin (a checkpoint id, or None for
    scratch) is the same run, so re-running a command continues it."""
    return "run-" + hashlib.sha1(f"{run_key(cfg)}|{origin or 'scratch'}".encode()).hexdigest()[:10]


def checkpoint_id(run: str, step: int) -> str:
    return f"{run}-s{step:06d}"


# --- rows -----------------------------------------------------------------------------


def checkpoint_row(checkpoint_id: str, kind: str, config: str, config_hash: str, step: int, path: str | None = None,
                   parent: str | None = None) -> dict:
    """A ``checkpoints`` row (every row is made here)."""
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return dict(checkpoint_id=checkpoint_id, kind=kind, parent=parent, config=config, config_hash=config_hash, step=int(step),
                path=path, created_at=now_utc())


def trained_row(cid: str, parent: str | None, cfg: Config, step: int, path: str) -> dict:
    """A controller the train stage saved under ``path``."""
    return checkpoint_row(cid, TRAINED, json.dumps(cfg.model_dump(mode="json")), cfg.digest(), step, path, parent)


def imported_row(cid: str, cfg: Config, path: str, source: str) -> dict:
    """Controller weights converted from elsewhere (``draganything import-official``) into ``path``; the config
    records where they came from (``source``)."""
    config = cfg.model_dump(mode="json") | {"source": source}
    return checkpoint_row(cid, IMPORTED, json.dumps(config), cfg.digest(), 0, path)


def reference_row(name: str) -> dict:
    """A model-free generator, so it ranks beside real ones."""
    return checkpoint_row(name, REFERENCE, json.dumps({"generator": name}), name, 0)


def control_off_row(parent: dict) -> dict:
    """The model of ``parent`` with its control switched off (``model.conditioning_scale = 0``)."""
    config = json.loads(parent["config"])
    config["model"]["conditioning_scale"] = 0.0
    return checkpoint_row(parent["checkpoint_id"] + NO_CONTROL, CONTROL_OFF, json.dumps(config), f"{parent['config_hash']}{NO_CONTROL}",
                          parent["step"], parent["path"], parent["checkpoint_id"])


def _kind_of(checkpoint_id: str, config: str | None) -> str:
    """The kind of a row written before the ``kind`` column existed."""
    try:
        generator = isinstance(config, str) and "generator" in json.loads(config)
    except ValueError:
        generator = False
    if checkpoint_id in REFERENCE_GENERATORS or generator:
        return REFERENCE
    return CONTROL_OFF if checkpoint_id.endswith(NO_CONTROL) else TRAINED


def classify(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (rows of ``checkpoints``) with every ``kind`` filled in."""
    table = table.copy()
    if "kind" not in table.columns:
        table["kind"] = None
    missing = table["kind"].isna()
    if missing.any():
        table.loc[missing, "kind"] = [_kind_of(c, cfg) for c, cfg in zip(table.loc[missing, "checkpoint_id"], table.loc[missing, "config"])]
    return table


def kind(row: dict) -> str:
    """The kind of one ``checkpoints`` row (classified when it predates the column)."""
    return row.get("kind") or _kind_of(row["checkpoint_id"], row.get("config"))


# --- queries --------------------------------------------------------------------------


def read(wd: Workdir) -> pd.DataFrame:
    """The ``checkpoints`` table, every row with its kind, oldest first."""
    return classify(wd.read("checkpoints")).sort_values(["created_at", "step"], kind="stable", ignore_index=True)


def trained(wd: Workdir, with_weights: bool = False) -> list[dict]:
    """Rows of trained (or imported) controllers, oldest first; ``with_weights``: only those whose weights are in the workdir."""
    table = read(wd)
    rows = table[table["kind"].isin(CONTROLLERS)].to_dict("records")
    if with_weights:
        rows = [r for r in rows if isinstance(r["path"], str) and wd.exists(r["path"], "controlnet", "config.json")]
    return rows


def resolve(wd: Workdir, checkpoint_id: str) -> dict:
    """The row of an id; references and control-off rows register themselves."""
    if checkpoint_id in REFERENCE_GENERATORS:
        wd.append("checkpoints", [reference_row(checkpoint_id)])
    if checkpoint_id.endswith(NO_CONTROL):
        wd.append("checkpoints", [control_off_row(resolve(wd, checkpoint_id[: -len(NO_CONTROL)]))])
    table = read(wd)
    row = table[table["checkpoint_id"] == checkpoint_id]
    if row.empty:
        known = ", ".join(sorted(table["checkpoint_id"])) or "none yet"
        raise UnknownCheckpoint(
            f"checkpoint '{checkpoint_id}' is not in {wd.url}/tables/checkpoints (known: {known}); "
            f"train one with `draganything train`, or use 'static' or 'warp'"
        )
    return row.iloc[0].to_dict()


def run_checkpoints(wd: Workdir, run: str) -> list[dict]:
    """The checkpoints of one training run, by step."""
    table = read(wd)
    return table[table["checkpoint_id"].str.startswith(run + "-")].sort_values("step", kind="stable").to_dict("records")


def latest_of_config(wd: Workdir, config_hash: str) -> dict | None:
    """The newest checkpoint (highest step) trained with this config, or None."""
    table = read(wd)
    mine = table[table["config_hash"] == config_hash].sort_values(["step", "created_at"], kind="stable")
    return None if mine.empty else mine.iloc[-1].to_dict()


def to_evaluate(
    wd: Workdir, suite: str, select: Literal["missing", "latest", "all"], references: bool, baselines: bool = True
) -> list[str]:
    """Which checkpoints a pipeline run generates and scores on ``suite``: the trained ones (all, or
    the latest), the references, and the latest with its control off; ``missing``: those without ObjMC."""
    rows = trained(wd)
    ids = [r["checkpoint_id"] for r in rows]
    chosen = ids[-1:] if select == "latest" else ids
    if baselines and rows:
        # A run's step-0 checkpoint is its untrained, zero-initialised controller: its videos are the
        # latest model's with control off (same base, same config), so only the baseline is generated.
        untrained = {r["checkpoint_id"] for r in rows[:-1] if r["step"] == 0 and r["config_hash"] == rows[-1]["config_hash"]}
        chosen = [c for c in chosen if c not in untrained] + [ids[-1] + NO_CONTROL]  # the latest model with control switched off
    if references:
        chosen = list(REFERENCE_GENERATORS) + chosen
    if select == "missing":
        scored = {(c, s) for c, s, m, *_ in wd.keys("metrics") if m == "objmc"}
        chosen = [c for c in chosen if (c, suite) not in scored]
    return chosen
