"""prefect.yaml end to end: a real server, deploy, a process worker, the nightly run twice."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.tables import Workdir
from flows.labels import labels_flow
from flows.runtime import run_flow

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


def _prefect(args, env, timeout=180):
    out = subprocess.run([PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout


def _run_nightly(env) -> str:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    run = run_deployment("pipeline/nightly-eval", timeout=0)
    _prefect(["worker", "start", "--pool", "draganything", "--type", "process", "--run-once"], env, timeout=600)
    with get_client(sync_client=True) as client:
        for _ in range(600):
            state = client.read_flow_run(run.id).state
            if state and state.is_final():
                break
            time.sleep(1)
    assert state.is_completed(), f"nightly-eval ended {state.type}: {state.message}"
    return str(run.id)


def test_nightly_eval_deployment_runs_then_skips(sample_root, tmp_path, orchestration_ready):
    workdir = tmp_path / "work"
    run_flow(labels_flow, data_root=str(sample_root), split="val", workdir=str(workdir), dataset="sample", progress=False)
    env = {**os.environ, "DRAGANYTHING_REPO": str(REPO), "DRAGANYTHING_WORKDIR": str(workdir), "DRAGANYTHING_DATA": str(sample_root)}
    env.pop("RAY_ADDRESS", None)
    _prefect(["work-pool", "create", "draganything", "--type", "process", "--overwrite"], env)
    out = _prefect(["--no-prompt", "deploy", "--all"], env)
    assert "nightly-eval" in out and "weekly-retrain" in out

    _run_nightly(env)
    wd = Workdir(workdir)
    metrics = wd.read("metrics")
    assert {("static", "objmc"), ("warp", "objmc"), ("warp", "fid"), ("warp", "fvd")} <= set(zip(metrics["checkpoint_id"], metrics["metric"]))
    n_samples, n_objmc = len(wd.read("samples")), len(wd.read("objmc"))

    _run_nightly(env)  # nothing is missing metrics now: no work, no duplicate
    assert len(wd.read("metrics")) == len(metrics)
    assert len(wd.read("samples")) == n_samples and len(wd.read("objmc")) == n_objmc
    for table in ("samples", "objmc", "metrics", "checkpoints"):
        from core.tables import TABLES

        df = wd.read(table)
        assert not df.duplicated(list(TABLES[table].key)).any(), table
