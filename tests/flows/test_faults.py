"""A Ray worker killed in the middle of a task: retried, the flow completes with every row once; with retries
off, the run fails and says so, and no metric is published from the items that were scored."""

import threading
import time

import psutil
import pytest

from core.tables import Workdir
from flows.generate import generate_flow
from flows.labels import labels_flow
from flows.pipeline import pipeline_flow
from flows.runtime import run_flow

pytestmark = pytest.mark.integration


def _kill_first_worker_running(title: str, stop: threading.Event, killed: list) -> None:
    while not stop.is_set() and not killed:
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if cmd.startswith(title):
                p.kill()  # SIGKILL: no cleanup, like an OOM kill or a lost node
                killed.append(p.info["pid"])
                return
        time.sleep(0.02)


def test_killed_worker_mid_generate_is_retried_without_duplicates(tmp_path, orchestration_ready):
    from core.sample_data import write_sample_dataset

    data = tmp_path / "data"
    write_sample_dataset(data, n_videos=16, n_frames=16, seed=3)  # 4 val videos
    workdir = str(tmp_path / "work")
    run_flow(labels_flow, data_root=str(data), split="val", workdir_url=workdir, dataset="sample", progress=False)

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_worker_running, args=("ray::generate-items", stop, killed))
    killer.start()
    try:
        out = run_flow(generate_flow, checkpoint="warp", suite="sample", workdir_url=workdir, overrides=["generate.items_per_task=1", "generate.seeds=[0,1,2]"], progress=False)
    finally:
        stop.set()
        killer.join()
    assert killed, "no generate task was caught running"
    samples = Workdir(workdir).read("samples")
    assert out["samples"] == len(samples) == 4 * 3
    assert not samples.duplicated(["checkpoint_id", "suite", "item_id", "seed"]).any()
    assert all(Workdir(workdir).exists(p) for p in samples["video_path"])


def test_a_task_killed_mid_objmc_with_retries_off_fails_the_run_and_publishes_no_partial_metric(
        tmp_path, sample_root, orchestration_ready, run_reports):
    workdir = str(tmp_path / "work")
    run_flow(labels_flow, data_root=str(sample_root), split="val", workdir_url=workdir, dataset="sample", progress=False)
    overrides = ["evaluate.bootstrap=100", "evaluate.items_per_task=1"]
    run_flow(pipeline_flow, workdir_url=workdir, stages=["generate"], checkpoints=["static"], overrides=overrides)

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_worker_running, args=("ray::objmc-items", stop, killed))
    killer.start()
    try:
        with pytest.raises(Exception, match=r"evaluate static/sample: 1 of \d+ tasks failed, so nothing was published"):
            run_flow(pipeline_flow, workdir_url=workdir, stages=["evaluate"], checkpoints=["static"],
                     overrides=[*overrides, "runtime.max_retries=0"])
    finally:
        stop.set()
        killer.join()
    assert killed, "no objmc task was caught running"
    wd = Workdir(workdir)
    items = set(wd.read("samples").query("checkpoint_id == 'static'")["item_id"])
    scored = set(wd.read("objmc").query("checkpoint_id == 'static'")["item_id"])
    assert scored < items  # the killed task's item is not scored ...
    assert wd.read("metrics").query("checkpoint_id == 'static'").empty  # ... and nothing was published from the others
    text = run_reports(workdir)[0][0].data
    assert "run FAILED" in text and "failed at:** evaluate static/sample" in text and "1 of" in text

    run_flow(pipeline_flow, workdir_url=workdir, stages=["evaluate"], checkpoints=["static"], overrides=overrides)
    objmc = wd.read("metrics").query("checkpoint_id == 'static' and metric == 'objmc'")
    assert len(objmc) == 1 and int(objmc["n"].iloc[0]) == len(items)  # the next run scores the rest and publishes all
