"""A checkpoint's folder: what is written, what is kept, what resume reads.

``checkpoints/<id>/``:

- ``controlnet/``: the weights generation uses (the EMA weights when ``train.ema_decay`` is set),
  safetensors + config; every checkpoint keeps them.
- ``controlnet_raw/``: the trained (raw) weights, when they differ from ``controlnet/`` (EMA on);
- ``state.pt``: optimizer, scheduler, step, run and torch RNG, plain tensors, dicts, lists and
  numbers (``torch.load(weights_only=True)`` reads it);
- ``config.json``.

Resume continues from the raw weights, with the EMA from ``controlnet/``. Only a run's last
``train.keep_last`` checkpoints keep ``controlnet_raw/`` and ``state.pt``; older ones keep the
weights for evaluation (a full-size controller's AdamW moments are twice its weights).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import torch

from core.config import Config
from core.tables import Workdir

WEIGHTS = "diffusion_pytorch_model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read; the message says which file and what to do."""


def save_checkpoint(wd: Workdir, cid: str, controlnet, state: dict, cfg: Config, raw=None) -> str:
    """Write ``checkpoints/<id>/`` whole or not at all: a temp folder renamed into place. ``controlnet``: the
    weights generation uses; ``raw``: the trained weights when they differ (EMA)."""
    rel = f"checkpoints/{cid}"

    def write(folder: Path) -> None:
        controlnet.save_pretrained(folder / "controlnet", safe_serialization=True)
        if raw is not None:
            raw.save_pretrained(folder / "controlnet_raw", safe_serialization=True)
        torch.save(state, folder / "state.pt")
        (folder / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))

    wd.write_dir_atomic(rel, write)  # a retried step never overwrites a good checkpoint
    return rel


def load_training_state(path: Path) -> dict:
    """``state.pt`` unpickled with ``weights_only=True``: tensors, numbers and containers, nothing that runs code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint_state(wd: Workdir, row: dict) -> tuple[dict, Path]:
    """The training state of a ``checkpoints`` row; a clear error if it is missing or damaged."""
    if not row.get("path"):
        raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' has no weights (a reference generator); resume from a trained one")
    folder = wd.local_dir(row["path"])
    state_file, weights = folder / "state.pt", folder / "controlnet" / WEIGHTS
    if weights.is_file() and not state_file.is_file() and (folder / "weights-only").is_file():
        raise CheckpointError(
            f"checkpoint '{row['checkpoint_id']}' keeps only its weights (train.keep_last keeps the training state of a run's "
            "last checkpoints); resume from a later checkpoint of its run, or `--resume latest`"
        )
    for f in (state_file, weights):
        if not f.is_file():
            raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' is incomplete: {f} is missing; resume from another checkpoint")
    try:
        state = load_training_state(state_file)
        from safetensors import safe_open

        for w in (weights, folder / "controlnet_raw" / WEIGHTS):
            if w.is_file():
                with safe_open(str(w), "pt"):
                    pass
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # garbage, not a pickle of foreign objects
            raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' is damaged (UnpicklingError reading {folder}); resume from another checkpoint") from None
        raise CheckpointError(
            f"checkpoint '{row['checkpoint_id']}': {state_file} holds objects other than a training state's (tensors, numbers, "
            "the RNG state), so it was not unpickled; resume from a checkpoint this pipeline wrote"
        ) from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' is damaged ({type(err).__name__} reading {folder}); resume from another checkpoint") from None
    return state, folder


def raw_weights_folder(folder: Path) -> Path:
    """Where resume reads the trained weights: ``controlnet_raw/`` when the checkpoint has one."""
    return folder / "controlnet_raw" if (folder / "controlnet_raw" / WEIGHTS).is_file() else folder / "controlnet"


def prune_training_state(wd: Workdir, paths: list[str], keep_last: int) -> list[str]:
    """Drop ``state.pt`` and ``controlnet_raw/`` from all but the last ``keep_last`` of a run's checkpoint
    folders (oldest first); the weights stay. Returns the folders pruned."""
    pruned = []
    if not wd.is_local:
        return pruned  # a published folder on an object store is never changed (readers cache it whole)
    for rel in paths[: max(0, len(paths) - keep_last)]:
        folder = Path(wd.local_path(rel))
        if not (folder / "state.pt").exists():
            continue
        (folder / "weights-only").write_text("training state dropped (train.keep_last)\n")
        shutil.rmtree(folder / "controlnet_raw", ignore_errors=True)
        (folder / "state.pt").unlink(missing_ok=True)
        pruned.append(rel)
    return pruned


def checkpoint_sizes(folder: str | Path) -> dict[str, int]:
    """Bytes of a checkpoint's parts: ``weights`` (controlnet/), ``raw`` (controlnet_raw/), ``state`` (state.pt)."""
    f = Path(folder)

    def size(p: Path) -> int:
        return sum(x.stat().st_size for x in p.rglob("*") if x.is_file()) if p.is_dir() else (p.stat().st_size if p.is_file() else 0)

    return {"weights": size(f / "controlnet"), "raw": size(f / "controlnet_raw"), "state": size(f / "state.pt")}
