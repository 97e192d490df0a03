"""The CLI refuses, in one sentence and before any work, what would fail or hang later."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cli(args: list[str], timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_entity_layer_out_of_range_fails_before_any_label_is_written(sample_root, tmp_path):
    out = _cli(["labels", "--data-root", str(sample_root), "--workdir", str(tmp_path / "w"), "--set", "model.entity_layer=-99"])
    assert out.returncode == 2 and "model.entity_layer -99 is out of range" in out.stderr
    assert not (tmp_path / "w").exists()


def test_a_yaml_syntax_error_is_one_line(sample_root, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("labels:\n  frames: {count: 8\n  resolution: [256, 256]\n")
    out = _cli(["labels", "--data-root", str(sample_root), "--workdir", str(tmp_path / "w"), "--config", str(bad)])
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "mine.yaml, line 3" in out.stderr and "Traceback" not in out.stderr


def test_generate_refuses_a_guidance_ramp_that_goes_down(tmp_path):
    out = _cli(["generate", "--checkpoint", "static", "--workdir", str(tmp_path / "w"), "--set", "generate.min_guidance_scale=4",
                "--set", "generate.max_guidance_scale=3"])
    assert out.returncode == 2 and "generate.min_guidance_scale (4) is above generate.max_guidance_scale (3)" in out.stderr


@pytest.mark.integration
def test_a_task_request_bigger_than_the_cluster_is_refused_not_waited_on(sample_root, tmp_path, orchestration_ready):
    """runtime.task_num_cpus=64 on a 2-CPU local Ray: one sentence at start-up (it used to wait forever)."""
    out = _cli(["labels", "--data-root", str(sample_root), "--workdir", str(tmp_path / "w"), "--set", "runtime.task_num_cpus=64",
                "--set", "labels.embeddings=false"], timeout=240, env={"PREFECT_API_URL": orchestration_ready})
    assert out.returncode == 2, out.stderr[-2000:]
    assert "'runtime.task_num_cpus' asks 64 CPU for one task but the largest Ray node" in out.stderr
    assert "has 2 CPU" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "w" / "tables" / "labels").exists()
