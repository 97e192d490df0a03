"""Every benchmark script starts: it imports (so a renamed function breaks this test, not the next
person who measures) and its `--help` exits 0."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_script_is_checked():
    assert {p.stem for p in SCRIPTS} >= {"evaluate", "dashboard", "train", "ablation"}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_a_benchmark_imports_and_its_help_exits_0(script, monkeypatch):
    res = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage" in res.stdout.lower()
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the script's imports (a GPU-only one skips here without CUDA); main() runs only under __main__
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
