"""Bad --stages / --suites / --checkpoint / --set values fail at once, in one sentence naming the valid values,
before Prefect, Ray or the workdir exist; the pipeline's output is short lines for a person."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Runs the CLI like `python -m flows.cli`, then says which heavy modules it imported (a server start needs them).
PROBE = ("import atexit, sys; atexit.register(lambda: print('IMPORTED', sorted(m for m in ('prefect', 'ray', 'torch') if m in sys.modules), "
         "file=sys.stderr)); sys.argv = ['draganything', *sys.argv[1:]]; from flows.cli import main; main()")


def _cli(args: list[str], timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out, time.monotonic() - t0


def _sentence(out: subprocess.CompletedProcess) -> str:
    lines = [x for x in out.stderr.strip().splitlines() if not x.startswith("IMPORTED")]
    assert len(lines) == 1, out.stderr
    assert "IMPORTED []" in out.stderr, f"nothing heavy may be imported (a server needs it): {out.stderr}"
    return lines[0]


def test_a_misspelt_stage_fails_in_seconds_naming_the_stages(tmp_path):
    out, took = _cli(["pipeline", "--workdir", str(tmp_path / "w"), "--stages", "label,train"])
    assert out.returncode == 2 and took < 5, (out.returncode, took)
    line = _sentence(out)
    assert "'label'" in line and "did you mean 'labels'" in line and "labels, train, generate, evaluate" in line
    assert not (tmp_path / "w").exists()


def test_an_unknown_suite_fails_in_seconds_and_creates_no_workdir(tmp_path):
    out, took = _cli(["pipeline", "--workdir", str(tmp_path / "w"), "--stages", "evaluate", "--suites", "nosuch"])
    assert out.returncode == 2 and took < 5, (out.returncode, took)
    line = _sentence(out)
    assert "'nosuch'" in line and "sample, vipseg-val, user-study" in line and "generate" not in line
    assert not (tmp_path / "w").exists()


def test_an_unknown_checkpoint_is_named_with_the_closest_one(tmp_path):
    from core.checkpoints import reference_row
    from core.tables import Workdir

    wd = Workdir(str(tmp_path / "w"))
    wd.append("checkpoints", [reference_row("warp")])
    out, took = _cli(["pipeline", "--workdir", str(tmp_path / "w"), "--stages", "evaluate", "--checkpoint", "wrap"])
    assert out.returncode == 2 and took < 5
    assert "did you mean 'warp'" in _sentence(out)


def test_a_misspelt_set_key_gets_a_did_you_mean(tmp_path):
    out, _ = _cli(["pipeline", "--workdir", str(tmp_path / "w"), "--stages", "evaluate", "--set", "train.stepz=3"])
    assert out.returncode == 2 and "did you mean 'train.steps'" in _sentence(out)


def test_report_on_an_unknown_suite_exits_non_zero_listing_the_known_ones(tmp_path):
    from core.tables import Workdir

    Workdir(str(tmp_path / "w"))
    out, _ = _cli(["report", "--workdir", str(tmp_path / "w"), "--suite", "nosuch"])
    assert out.returncode != 0
    assert "sample, vipseg-val, user-study" in _sentence(out)


def test_the_pipeline_summary_is_short_lines():
    from flows.checks import stage_lines

    report = {
        "seconds": {"labels": 12.3, "train": 380.2, "generate": 41.0, "evaluate": 88.8},
        "labels": {"train": {"videos": 180, "skipped": 0, "rows": 1080, "rejects": 0}, "val": {"videos": 12, "skipped": 0, "rows": 72, "rejects": 1}},
        "train": {"workers": 1, "latest": "run-b43cceb500-s001000", "step": 1000, "metrics": {"loss": 0.1}, "encoded": 3},
        "generate": {f"ck{i}/sample": {"items": 12} for i in range(6)},
        "evaluate": {f"ck{i}/sample": {"items": 12, "skipped": i == 0} for i in range(6)},
        "verdicts": [{"suite": "user-study", "checkpoint": "run-b43cceb500-s001000", "verdict": "worse", "best": "run-b43cceb500-s000500"}],
    }
    lines = stage_lines(report)
    assert [x.split(" ")[0] for x in lines] == ["labels", "train", "generate", "evaluate", "verdict"]
    assert all(len(x) <= 200 for x in lines), lines
    assert "1 unchanged since the last run" in lines[3]


def test_a_ray_workers_progress_reaches_the_driver_as_whole_lines(tmp_path):
    """The demo printed 36 empty `(train-controller pid=...)` lines: tqdm's in-place redraws from a worker."""
    script = tmp_path / "bar.py"
    script.write_text(
        "import time, ray\n"
        "ray.init(address='local', num_cpus=1, include_dashboard=False, log_to_driver=True, configure_logging=False)\n"
        "@ray.remote\n"
        "def work():\n"
        "    from core.progress import line_bar\n"
        "    bar = line_bar(total=5, desc='train run-x', unit='step', mininterval=0)\n"
        "    for _ in range(5):\n"
        "        time.sleep(0.05); bar.set_postfix(loss='0.1234', refresh=False); bar.update(1)\n"
        "    bar.close()\n"
        "ray.get(work.remote()); time.sleep(2); ray.shutdown()\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = (out.stdout + out.stderr).splitlines()
    bars = [x for x in lines if "train run-x" in x]
    assert bars and any("5/5" in x for x in bars), lines[-20:]
    assert not [x for x in lines if re.fullmatch(r"\s*\(\S+ pid=\d+(, ip=\S+)?\)\s*", x)], "empty process-prefix lines"
    assert all(len(x) <= 200 and "\r" not in x for x in bars), "one redraw per line (tqdm's own output put several on one line)"
