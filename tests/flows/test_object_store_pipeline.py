"""`draganything pipeline` on an s3:// workdir (a real S3 API on loopback), as a user runs it: same tables as on disk."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core.tables import TABLES, Workdir

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "flows.cli"]
# A whole DAG in minutes: a base fit and a controller of a few steps, checkpoints at 0, 2 and 4.
SMALL = ["train.steps=4", "train.checkpoint_every=2", "train.log_every=1", "train.batch_size=1", "train.cpus_per_worker=1",
         "train.fit_base.vae_steps=4", "train.fit_base.unet_steps=4", "model.num_frames=4",
         "evaluate.bootstrap=100", "evaluate.jackknife_groups=4"]
# Columns that say when, how long, or where the workdir is (the base model's location is in the config).
UNSTABLE = {"at", "created_at", "seconds", "samples_per_s", "config", "config_hash"}


def run_cli(args: list[str], cache: Path, timeout: int = 1500) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DRAGANYTHING_CACHE": str(cache)}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    out = subprocess.run([*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"draganything {' '.join(args[:1])} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return time.perf_counter() - t0


def comparable(wd: Workdir, table: str) -> pd.DataFrame:
    key = list(TABLES[table].key)
    df = wd.read(table)
    return df.drop(columns=[c for c in df.columns if c in UNSTABLE]).sort_values(key).reset_index(drop=True)


def test_generate_and_evaluate_on_s3_need_no_local_workdir(sample_root, s3_url, tmp_path, orchestration_ready):
    sets = sum((["--set", s] for s in SMALL), [])
    run_cli(["pipeline", "-w", s3_url, "--data-root", str(sample_root), "--stages", "labels,generate,evaluate",
             "--checkpoint", "static", *sets], tmp_path / "cache")
    wd = Workdir(s3_url)
    samples = wd.read("samples")
    assert len(samples) == 2 and all(wd.exists(p) for p in samples["video_path"])
    assert all(wd.exists(p) for p in wd.read("labels")["frames_path"])
    metrics = wd.read("metrics")
    assert {"objmc", "fid", "fvd"} <= set(metrics["metric"])
    assert not metrics.duplicated(list(TABLES["metrics"].key)).any()


@pytest.mark.slow
def test_whole_pipeline_on_s3_gives_the_tables_of_a_local_workdir(sample_root, s3_url, tmp_path, orchestration_ready):
    sets = sum((["--set", s] for s in SMALL), [])
    args = ["--data-root", str(sample_root), "--select", "all", *sets]
    local = tmp_path / "local"
    seconds = {
        "local": run_cli(["pipeline", "-w", str(local), *args], tmp_path / "cache-local"),
        "s3": run_cli(["pipeline", "-w", s3_url, *args], tmp_path / "cache-s3"),
    }
    print(json.dumps({"pipeline_seconds": seconds, "ratio": seconds["s3"] / seconds["local"], "load": os.getloadavg()}))
    a, b = Workdir(str(local)), Workdir(s3_url)
    for table in ("labels", "entity_embeddings", "checkpoints", "train_log", "samples", "objmc", "metrics", "rejects"):
        left, right = comparable(a, table), comparable(b, table)
        assert len(left) > 0 or table == "rejects", f"the local run wrote no {table}"
        pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-5, obj=table)
    ckpts = b.read("checkpoints")
    trained = ckpts[ckpts["path"].notna() & ~ckpts["checkpoint_id"].str.contains("~", regex=False)]
    assert len(trained) == 3 and all(b.has_dir(p) for p in trained["path"])
    assert all(b.exists(p) for p in b.read("samples")["video_path"])
    # A second run on the bucket finds everything done: no new row anywhere.
    counts = {t: len(b.read(t)) for t in TABLES}
    run_cli(["pipeline", "-w", s3_url, *args[:-len(sets)], "--select", "missing", *sets], tmp_path / "cache-s3-again")
    assert {t: len(b.read(t)) for t in TABLES} == counts
