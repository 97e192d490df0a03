"""prefect.yaml end to end: a real server (SQLite), deploy, a process worker, the nightly run twice."""

import pytest

from flows.labels import labels_flow
from flows.runtime import run_flow

pytestmark = pytest.mark.integration


def test_nightly_eval_deployment_runs_then_skips(sample_root, tmp_path, orchestration_ready, nightly):
    deploy_env, nightly_twice = nightly
    workdir = tmp_path / "work"
    run_flow(labels_flow, data_root=str(sample_root), split="val", workdir_url=str(workdir), dataset="sample", progress=False)
    nightly_twice(workdir, sample_root, deploy_env(workdir, sample_root))
