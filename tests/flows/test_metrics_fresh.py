"""Metrics are a function of the scored items, always current: evaluate 4 cases, then 27, through the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from core.tables import Workdir
from tests.study_cases import write_cases as _cases

pytestmark = pytest.mark.integration




def _flat_mean(wd, checkpoint):
    o = wd.read("objmc")
    o = o[o["checkpoint_id"] == checkpoint]
    per = np.concatenate([np.asarray(p, float) for p in o["per_frame"]])
    return float(np.nansum(per) / np.isfinite(per).sum()), o["item_id"].nunique()


def test_metric_is_recomputed_from_all_items_and_the_old_value_kept(tmp_path, orchestration_ready):
    from flows.cli import app

    cases, work = tmp_path / "cases", tmp_path / "work"
    names = [f"case{k:02d}" for k in range(27)]
    _cases(cases, names[:4])
    runner = CliRunner()
    opts = ["--workdir", str(work), "--set", f"evaluate.user_study_dir={cases}", "--set", "generate.items_per_task=27"]

    def run(*args):
        res = runner.invoke(app, [*args, *opts], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout.strip().splitlines()[-1])

    run("generate", "--checkpoint", "warp", "--suite", "user-study")
    run("evaluate", "--checkpoint", "warp", "--suite", "user-study")
    wd = Workdir(work)
    first = wd.read("metrics").set_index("metric").loc["objmc"]
    assert first["n"] == 4
    _cases(cases, names[4:])  # 23 more cases arrive
    run("generate", "--checkpoint", "warp", "--suite", "user-study")
    out = run("evaluate", "--checkpoint", "warp", "--suite", "user-study")
    assert out["metrics_written"] >= 1
    metrics = wd.read("metrics")
    objmc = metrics[metrics["metric"] == "objmc"]
    assert len(objmc) == 1  # replaced, not appended
    value, items = _flat_mean(wd, "warp")
    assert items == 27 and objmc["n"].iloc[0] == 27
    assert objmc["value"].iloc[0] == pytest.approx(value, abs=1e-9)
    history = wd.read("metrics_history")
    h = history[history["metric"] == "objmc"].sort_values("created_at")
    assert h["n"].tolist() == [4, 27] and h["value"].iloc[0] == pytest.approx(first["value"])
    # nothing new: a third evaluate changes nothing
    assert run("evaluate", "--checkpoint", "warp", "--suite", "user-study")["metrics_written"] == 0
    report = runner.invoke(app, ["report", "--workdir", str(work), "-s", "user-study"]).output
    assert "protocol: **project**" in report and "paper: pytorch-fid / TF I3D / CoTracker2" in report
