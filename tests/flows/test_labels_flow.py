"""The labels flow end to end on a real Prefect server and a real local Ray."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from core.tables import Workdir
from flows.labels import labels_flow
from flows.runtime import run_flow

pytestmark = pytest.mark.integration


def test_labels_flow_writes_tables_and_reruns_idempotently(sample_root, tmp_path, orchestration_ready):
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    (data / "imgs" / "sample_0004" / "00000002.jpg").write_bytes(b"not a jpeg")  # one bad video
    workdir = str(tmp_path / "work")

    first = run_flow(labels_flow, data_root=str(data), split="train", workdir_url=workdir, dataset="sample", progress=False)
    wd = Workdir(workdir)
    labels, rejects = wd.read("labels"), wd.read("rejects")
    assert first["videos"] == 6 and first["skipped"] == 0
    assert set(labels["video_id"]) == {"sample_0000", "sample_0001", "sample_0002", "sample_0005", "sample_0006"}
    assert list(rejects["item"]) == ["sample/train/sample_0004"]
    assert "cannot be decoded" in rejects["reason"][0]
    assert not labels.duplicated(["dataset", "split", "video_id", "entity_id"]).any()
    assert all(wd.exists(p) for p in labels["frames_path"].unique())

    again = run_flow(labels_flow, data_root=str(data), split="train", workdir_url=workdir, dataset="sample", progress=False)
    assert again["skipped"] == 6 and again["rows"] == 0 and again["rejects"] == 0
    assert len(wd.read("labels")) == len(labels)

    # Fixed data + --retry-rejects: the video is labelled and its reject is gone.
    shutil.copy(sample_root / "imgs" / "sample_0004" / "00000002.jpg", data / "imgs" / "sample_0004" / "00000002.jpg")
    fixed = run_flow(labels_flow, data_root=str(data), split="train", workdir_url=workdir, dataset="sample", retry_rejects=True, progress=False)
    assert fixed["skipped"] == 5 and fixed["rows"] > 0
    assert wd.read("rejects").empty
    assert "sample_0004" in set(wd.read("labels")["video_id"])


def test_cli_rejects_a_bad_config_before_any_work(sample_root, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "labels", "--data-root", str(sample_root), "--workdir", str(tmp_path / "w"),
         "--set", "labels.tracker.kind=raft"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "labels.tracker.kind" in out.stderr and "'lk'" in out.stderr and "'cotracker'" in out.stderr
    assert not (tmp_path / "w").exists()


def test_cli_sample_data_is_deterministic(tmp_path):
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-m", "flows.cli", "sample-data", "--out", str(tmp_path / name), "--videos", "2"],
                       check=True, capture_output=True, timeout=120)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 60
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_cli_prints_progress_and_results_only(tmp_path):
    """A newcomer's first command: no telemetry traceback, no Ray auth notice, no Prefect INFO chatter."""
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "flows.cli", "sample-data", "--out", str(data), "--videos", "2"], check=True, capture_output=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_"))}  # as in a fresh shell
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "labels", "--data-root", str(data), "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=600, env={**env, "PREFECT_HOME": str(tmp_path / "prefect")},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["videos"] == 2
    for noise in ("telemetry", "Traceback", "Token authentication", "| INFO", "database is locked"):
        assert noise not in out.stderr, f"{noise!r} in the CLI's output:\n{out.stderr[-3000:]}"
    assert "labels" in out.stderr  # the progress bar
