"""generate -> evaluate flows on a real Prefect server and Ray; the objmc CLI on JSON folders."""

import subprocess
import sys

import numpy as np
import pytest

from core.checkpoints import UnknownCheckpoint
from core.tables import Workdir
from flows.evaluate import evaluate_flow
from flows.generate import generate_flow
from flows.labels import labels_flow
from flows.runtime import run_flow
from tasks.evaluate import write_trajectory_dir

pytestmark = pytest.mark.integration


def test_generate_and_evaluate_flows(sample_root, tmp_path, orchestration_ready):
    workdir = str(tmp_path / "work")
    run_flow(labels_flow, data_root=str(sample_root), split="val", workdir_url=workdir, dataset="sample", progress=False)
    first = run_flow(generate_flow, checkpoint="static", suite="sample", workdir_url=workdir, progress=False)
    assert len(first.pop("nodes")) == 1  # the one local Ray node
    assert first == {"items": 2, "skipped": 0, "samples": 2, "rejects": 0}
    assert run_flow(generate_flow, checkpoint="static", suite="sample", workdir_url=workdir, progress=False)["skipped"] == 2
    out = run_flow(evaluate_flow, checkpoint="static", suite="sample", workdir_url=workdir, progress=False)
    assert out["metrics_written"] == 5 and out["objmc[tracker:lk]"] > 5  # ObjMC, FID, KID, FVD, KVD
    wd = Workdir(workdir)
    assert not wd.read("objmc").duplicated(["checkpoint_id", "suite", "item_id", "entity_id"]).any()
    assert run_flow(evaluate_flow, checkpoint="static", suite="sample", workdir_url=workdir, progress=False)["metrics_written"] == 0  # nothing twice
    with pytest.raises(UnknownCheckpoint, match="train one"):
        run_flow(generate_flow, checkpoint="nope", suite="sample", workdir_url=workdir, progress=False)


def test_objmc_cli_scores_official_json_folders(tmp_path):
    gt = {"v1": {"1": np.array([[0.0, 0.0], [10.0, 0.0]]), "2": np.array([[5.0, 5.0], [5.0, 5.0]])}}
    pred = {"v1": {"1": np.array([[0.0, 0.0], [13.0, 4.0]]), "2": np.array([[5.0, 5.0], [5.0, 5.0]])}}
    for name, data in (("gt", gt), ("pred", pred)):
        write_trajectory_dir(tmp_path / name, data)
    out = subprocess.run([sys.executable, "-m", "flows.cli", "evaluate", "objmc", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "1.25" in out.stdout  # (0 + 5 + 0 + 0) / 4 pairs


def test_a_generation_task_runs_with_the_threads_of_its_own_reservation(sample_root, tmp_path, orchestration_ready):
    # A reused Ray worker keeps the torch threads of its first task; the 2-CPU training task left 2
    # behind, and two 1-CPU generation tasks then ran 4 threads on 2 cores.
    import torch

    from core.checkpoints import resolve
    from core.config import load_config
    from flows.generate import generate_chunk
    from tasks.generate import pending_items

    workdir = str(tmp_path / "work")
    run_flow(labels_flow, data_root=str(sample_root), split="val", workdir_url=workdir, dataset="sample", progress=False)
    cfg = load_config("tiny", ["runtime.task_num_cpus=1"])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        todo, _ = pending_items(Workdir(workdir), "static", "sample", cfg)
        out = generate_chunk.fn(workdir, resolve(Workdir(workdir), "static"), "sample", todo[:1], cfg)
        assert out["samples"] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
