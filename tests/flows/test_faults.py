"""A Ray worker killed in the middle of a generate task: the flow still completes, every row once."""

import threading
import time

import psutil
import pytest

from core.tables import Workdir
from flows.generate import generate_flow
from flows.labels import labels_flow
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
