"""Shared by the deployment tests: the prefect CLI from this venv, and one run of `nightly-eval` through a process worker."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


def prefect_cli(args: list[str], env: dict[str, str], timeout: int = 180) -> str:
    out = subprocess.run([PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout


def run_nightly_once(env: dict[str, str]) -> str:
    """Start a `pipeline/nightly-eval` run, serve it with a `--run-once` process worker, wait for it to complete."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    run = run_deployment("pipeline/nightly-eval", timeout=0)
    prefect_cli(["worker", "start", "--pool", "draganything", "--type", "process", "--run-once"], env, timeout=600)
    with get_client(sync_client=True) as client:
        for _ in range(600):
            state = client.read_flow_run(run.id).state
            if state and state.is_final():
                break
            time.sleep(1)
    assert state.is_completed(), f"nightly-eval ended {state.type}: {state.message}"
    return str(run.id)


def deploy_env(workdir: Path, data: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DRAGANYTHING_REPO": str(REPO), "DRAGANYTHING_WORKDIR": str(workdir), "DRAGANYTHING_DATA": str(data), **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def nightly_twice(workdir: Path, data: Path, env: dict[str, str]) -> None:
    """Deploy prefect.yaml, run `nightly-eval` twice: the first scores the references, the second does nothing."""
    from core.tables import TABLES, Workdir

    prefect_cli(["work-pool", "create", "draganything", "--type", "process", "--overwrite"], env)
    out = prefect_cli(["--no-prompt", "deploy", "--all"], env)
    assert "nightly-eval" in out and "weekly-retrain" in out

    run_nightly_once(env)
    wd = Workdir(workdir)
    metrics = wd.read("metrics")
    assert {("static", "objmc"), ("warp", "objmc"), ("warp", "fid"), ("warp", "fvd")} <= set(zip(metrics["checkpoint_id"], metrics["metric"]))
    before = {t: len(wd.read(t)) for t in TABLES}

    run_nightly_once(env)  # nothing is missing metrics now: no work, no duplicate
    assert {t: len(wd.read(t)) for t in TABLES} == before
    for table in TABLES:
        assert not wd.read(table).duplicated(list(TABLES[table].key)).any(), table


@pytest.fixture
def nightly():
    """(deploy_env, nightly_twice): see those functions."""
    return deploy_env, nightly_twice
