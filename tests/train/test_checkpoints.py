"""Checkpoints a user can afford: raw and EMA weights both kept, resume from the raw ones, full state only for the last few."""

import shutil
from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.tables import Workdir
from tasks.checkpoint_files import checkpoint_sizes
from tasks.train import CheckpointError, resolve_resume, run_training

from .conftest import FAST

EMA = [*FAST, "train.ema_decay=0.5"]  # a short memory, so the EMA is far from the raw weights after a few steps


def _copy(labelled, tmp_path) -> str:
    dst = tmp_path / "w"
    shutil.copytree(labelled, dst)
    return str(dst)


def _log(workdir):
    log = Workdir(workdir).read("train_log").sort_values("step")
    return dict(zip(log["step"], log["loss"]))


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def test_resume_with_ema_continues_from_the_raw_weights_and_reproduces_the_uninterrupted_run(labelled, tmp_path):
    cfg = load_config("tiny", EMA)
    straight = _copy(labelled, tmp_path / "a")
    run_training(straight, cfg, steps=4, progress=False)
    full = _log(straight)

    interrupted = _copy(labelled, tmp_path / "b")
    run_training(interrupted, cfg, steps=2, progress=False)
    folder = Path(interrupted) / resolve_resume(Workdir(interrupted), "latest")["path"]
    raw, ema = _weights(folder / "controlnet_raw"), _weights(folder / "controlnet")
    assert any(not torch.equal(raw[k], ema[k]) for k in raw), "the checkpoint keeps both the EMA and the raw weights"
    run_training(interrupted, cfg, steps=4, progress=False)
    part = _log(interrupted)
    for s in (3, 4):
        assert part[s] == pytest.approx(full[s], rel=1e-5, abs=1e-7), (s, part[s], full[s])
    # and the EMA carried on too: the final weights generation uses are the same
    a = _weights(Path(straight) / resolve_resume(Workdir(straight), "latest")["path"] / "controlnet")
    b = _weights(Path(interrupted) / resolve_resume(Workdir(interrupted), "latest")["path"] / "controlnet")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)  # (float noise: ~1e-6, as in the raw weights)


def test_only_the_last_keep_last_checkpoints_keep_the_training_state(labelled, tmp_path):
    workdir = _copy(labelled, tmp_path)
    cfg = load_config("tiny", [*EMA, "train.keep_last=1"])
    run_training(workdir, cfg, steps=6, progress=False)
    wd = Workdir(workdir)
    rows = wd.read("checkpoints").sort_values("step")
    assert list(rows["step"]) == [0, 2, 4, 6]
    sizes = {int(r.step): checkpoint_sizes(Path(workdir) / r.path) for r in rows.itertuples()}
    for step in (0, 2, 4):
        assert sizes[step]["weights"] > 0 and sizes[step]["raw"] == 0 and sizes[step]["state"] == 0, (step, sizes[step])
    last = sizes[6]
    # AdamW's two moments are twice the weights: the full state is about three times a weights-only checkpoint
    assert last["raw"] == pytest.approx(last["weights"], rel=0.01) and last["state"] > 1.9 * last["weights"]
    old = rows.iloc[1]["checkpoint_id"]
    with pytest.raises(CheckpointError, match="keeps only its weights.*train.keep_last"):
        run_training(workdir, cfg, resume=old, steps=1, progress=False)
    # the newest one resumes
    assert run_training(workdir, cfg, resume="latest", steps=1, progress=False)["trained_steps"] == 1
