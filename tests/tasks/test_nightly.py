"""The run report's verdicts (paired ObjMC against the current best) and `status --fail-on-regression`."""

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np

from core.tables import Workdir
from tasks.nightly import BETTER, SAME, WORSE, compare_to_best, current_best, newest_verdict, run_report

REPO = Path(__file__).resolve().parents[2]
ITEMS = [f"sample/val/v{i:02d}" for i in range(12)]
BASE = np.random.default_rng(0).uniform(4.0, 12.0, size=(len(ITEMS), 2, 8))  # item x entity x frame errors (px)

IDENTITY = "project | lk(win 9, levels 3, fb 1.0) | test rows | eval 64x64"  # objmc and metrics rows are keyed by how they were measured


def add_checkpoint(wd: Workdir, cid: str, minutes: int, shift: float, noise: float = 0.0, seed: int = 1) -> None:
    """A trained checkpoint scored on 12 items: the base errors moved by ``shift`` px (plus noise)."""
    created = dt.datetime(2026, 12, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=minutes)
    wd.append("checkpoints", [dict(checkpoint_id=cid, kind="trained", parent=None, config="{}", config_hash="h", step=minutes,
                                   path=f"checkpoints/{cid}", created_at=created)])
    err = BASE + shift + np.random.default_rng(seed).normal(0, noise, BASE.shape)
    wd.append("objmc", [dict(checkpoint_id=cid, suite="sample", item_id=item, entity_id=e, error_px=float(err[i, e].mean()),
                             per_frame=err[i, e].tolist(), tracker="lk", identity=IDENTITY) for i, item in enumerate(ITEMS) for e in range(2)])
    wd.append("metrics", [dict(checkpoint_id=cid, suite="sample", metric="objmc", backbone="tracker:lk", value=float(err.mean()),
                               ci_low=None, ci_high=None, n=len(ITEMS), created_at=created, identity=IDENTITY)])


def test_verdicts_against_the_current_best(tmp_path):
    wd = Workdir(tmp_path)
    add_checkpoint(wd, "run-a-s000100", 1, shift=0.0)
    add_checkpoint(wd, "run-a-s000200", 2, shift=0.8, noise=0.1)   # worse on every item, by less than the items vary
    add_checkpoint(wd, "run-a-s000300", 3, shift=0.0, noise=0.05)  # the same errors, jittered
    add_checkpoint(wd, "run-a-s000400", 4, shift=-0.8, noise=0.1)  # better on every item
    assert current_best(wd, "sample") == "run-a-s000400"
    assert current_best(wd, "sample", leave_out="run-a-s000400") in {"run-a-s000100", "run-a-s000300"}
    found = {v["checkpoint"]: v for v in compare_to_best(wd, "sample", ["run-a-s000200", "run-a-s000300", "run-a-s000400"])}
    assert found["run-a-s000200"]["verdict"] == WORSE and found["run-a-s000200"]["best"] == "run-a-s000400"
    assert found["run-a-s000300"]["verdict"] == WORSE  # 0.8 px behind the best, on every item
    assert found["run-a-s000400"]["verdict"] == BETTER and found["run-a-s000400"]["items"] == 12
    markdown, verdicts = run_report(wd, ["sample"], {"sample": ["run-a-s000400"]})
    assert "`run-a-s000400` is **better**" in markdown and "| checkpoint | step |" in markdown and len(verdicts) == 1


def test_a_jittered_copy_of_the_best_is_indistinguishable(tmp_path):
    wd = Workdir(tmp_path)
    add_checkpoint(wd, "run-b-s000100", 1, shift=0.0)
    add_checkpoint(wd, "run-b-s000200", 2, shift=0.0, noise=0.5)
    assert newest_verdict(wd, "sample")["verdict"] == SAME


def _status(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "status", "-w", str(workdir), "--fail-on-regression"], cwd=REPO,
                          capture_output=True, text=True, timeout=180)


def test_status_fails_when_the_newest_checkpoint_is_significantly_worse(tmp_path):
    wd = Workdir(tmp_path)
    add_checkpoint(wd, "run-c-s000100", 1, shift=0.0)
    add_checkpoint(wd, "run-c-s000200", 2, shift=-0.5, noise=0.1)
    ok = _status(tmp_path)
    assert ok.returncode == 0, ok.stderr
    add_checkpoint(wd, "run-c-s000300", 3, shift=1.0, noise=0.1)
    bad = _status(tmp_path)
    assert bad.returncode == 1
    assert "regression" in bad.stderr and "run-c-s000300" in bad.stderr and "run-c-s000200" in bad.stderr
