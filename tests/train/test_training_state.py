"""Training state is unpickled with weights_only=True: a planted state.pt runs no code, a real one resumes."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from core.config import load_config
from core.tables import Workdir
from tasks.checkpoint_files import CheckpointError, load_checkpoint_state, load_training_state
from tasks.train import resolve_resume, run_training

from .conftest import FAST

MARKER = "/tmp/draganything-pwned-by-state-pt"


class _Planted:
    """What an attacker pickles into state.pt: unpickling it runs a shell command."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _checkpoint(tmp_path, state) -> tuple[Workdir, dict]:
    folder = tmp_path / "checkpoints" / "c"
    (folder / "controlnet").mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(folder / "controlnet" / "diffusion_pytorch_model.safetensors"))
    torch.save(state, folder / "state.pt")
    return Workdir(tmp_path), {"checkpoint_id": "c", "path": "checkpoints/c"}


def _state() -> dict:
    """A training state as train_loop writes one: AdamW and LambdaLR state, EMA tensors, the RNG states."""
    m = torch.nn.Linear(3, 3)
    opt = torch.optim.AdamW(m.parameters())
    m(torch.ones(3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "ema": [p.detach().clone() for p in m.parameters()],
            "step": 3, "rng": {"torch": torch.get_rng_state()}, "run": "run-x"}


def test_a_real_training_state_loads_and_a_planted_one_is_refused_unrun(tmp_path):
    wd, row = _checkpoint(tmp_path / "good", _state())
    state, _ = load_checkpoint_state(wd, row)
    assert state["step"] == 3 and state["optimizer"]["state"] and state["rng"]["torch"].dtype == torch.uint8
    if os.path.exists(MARKER):
        os.remove(MARKER)
    wd, row = _checkpoint(tmp_path / "bad", {**_state(), "optimizer": _Planted()})
    with pytest.raises(CheckpointError, match="was not unpickled"):
        load_checkpoint_state(wd, row)
    assert not os.path.exists(MARKER), "unpickling state.pt ran the planted command"


@pytest.mark.slow
def test_a_planted_state_file_is_refused_by_train_resume(labelled, tmp_path, orchestration_ready):
    from typer.testing import CliRunner

    from flows.cli import app

    work = tmp_path / "w"
    shutil.copytree(labelled, work)
    cfg = load_config("tiny", FAST)
    out = run_training(str(work), cfg, steps=2, progress=False)
    good = resolve_resume(Workdir(str(work)), out["latest"])
    state_file = work / good["path"] / "state.pt"
    real = load_training_state(state_file)  # what training wrote loads with weights_only=True
    assert real["step"] == 2 and real["optimizer"]["state"] and real["rng"]["torch"].dtype == torch.uint8

    if os.path.exists(MARKER):
        os.remove(MARKER)
    torch.save({**real, "optimizer": _Planted()}, state_file)
    args = ["train", "--workdir", str(work), "--resume", good["checkpoint_id"], "--steps", "1"]
    for o in FAST:
        args += ["--set", o]
    result = CliRunner().invoke(app, args)
    assert not os.path.exists(MARKER), "unpickling state.pt ran the planted command"
    assert result.exit_code == 2, result.output
    assert "was not unpickled" in result.output and good["checkpoint_id"] in result.output


def test_garbage_state_is_still_called_damaged(tmp_path):
    wd, row = _checkpoint(tmp_path, {})
    (tmp_path / "checkpoints" / "c" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is damaged"):
        load_checkpoint_state(wd, row)
