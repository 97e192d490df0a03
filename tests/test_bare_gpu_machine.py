"""What `make test-gpu` needs on a bare GPU machine: torch, transformers, accelerate, safetensors, a carried
diffusers wheel (with its own needs: numpy, Pillow; PyYAML comes with transformers) and pytest. Nothing of the orchestration or data stack.

Every module that the gpu tests and benchmarks/gpu.py import (lazy imports included, read from their
source) is imported, and the gpu tests collected, in a fresh interpreter in which those other packages
cannot be imported."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT = ["pydantic", "prefect", "ray", "pandas", "pyarrow", "cv2", "scipy", "skimage", "fsspec", "s3fs", "streamlit",
          "psutil", "typer", "cleanfid", "sqlalchemy"]
OPTIONAL = {"bitsandbytes"}  # benchmarks/gpu.py's 8-bit AdamW row runs only where it is installed
GPU_FILES = [ROOT / "benchmarks" / "gpu.py", *sorted((ROOT / "tests" / "gpu").glob("*.py"))]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _run_without(absent: list[str], code: str) -> subprocess.CompletedProcess:
    prelude = f"import sys\nfor name in {absent!r}:\n    sys.modules[name] = None\nsys.path.insert(0, {str(ROOT)!r})\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_gpu_tests_and_benchmark_import_nothing_a_bare_gpu_machine_lacks():
    modules = sorted(set().union(*map(_imported_modules, GPU_FILES)) - {"__future__"} - OPTIONAL)
    assert any(m.startswith("model.") for m in modules), modules
    code = (f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "import pytest\nsys.exit(pytest.main(['--collect-only', '-q', '-m', 'gpu', '-p', 'no:cacheprovider', 'tests/gpu']))\n")
    r = _run_without(ABSENT, code)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "test_generation_on_cuda_in_each_dtype" in r.stdout


def test_the_guard_fails_when_a_model_module_needs_the_config_model():
    """The check above can fail: the same interpreter refuses ``core.config`` (pydantic)."""
    r = _run_without(ABSENT, "import core.config\n")
    assert r.returncode != 0 and "halted; None in sys.modules" in r.stderr


def test_the_bare_box_rehearsal_runs_every_gpu_call_on_the_cpu(tmp_path):
    """What `make test-gpu` runs, on the CPU, with every module a bare GPU machine lacks blocked in every
    process (a ``sitecustomize`` on ``PYTHONPATH``, so pytest's subprocess is blocked too): the gpu tests
    (pipeline calls with 1-, 2-, many-point and timed paths, with and without radii, a training step,
    extraction, offload) and benchmarks/gpu.py at tiny sizes (the recipe's training steps through
    ``batch_for_step``, checkpoint save and load, generation with the SD1.5-shaped extractor, the sweep).
    Every stage writes its row; an error row fails this test."""
    import json
    import os

    (tmp_path / "sitecustomize.py").write_text(f"import sys\nfor name in {ABSENT!r}:\n    sys.modules[name] = None\n")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = tmp_path / "rehearsal.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--rehearse", "--out", str(out)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=1500, env=env)
    text = out.read_text()
    result = json.loads(text.split("```json\n")[1].split("\n```")[0])
    assert r.returncode == 0 and not result["errors"], (result["errors"], (r.stdout + r.stderr)[-3000:])
    assert "passed" in text and "failed" not in text.split("gpu tests")[1].splitlines()[0]
    whats = [row["what"] for row in result["rows"]]
    assert sum(w.startswith("train:") for w in whats) == 3 and any(w.startswith("checkpoint") for w in whats)
    assert any(w.startswith("generate:") for w in whats)


def test_the_rehearsal_writes_an_error_row_for_a_failing_stage_and_goes_on(tmp_path, monkeypatch):
    """A stage that raises leaves its error row; the rows of the stages after it are still written."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.Report(tmp_path / "r.md")
    with bench.stage(report, "broken"):
        raise RuntimeError("out of memory\nsecond line")
    with bench.stage(report, "fine"):
        report.row(what="fine")
    text = (tmp_path / "r.md").read_text()
    assert "| ERROR broken |" in text and "RuntimeError: out of memory |" in text and "| fine |" in text


def test_the_benchmarks_recipe_is_the_svd_vipseg_profile():
    """benchmarks/gpu.py reads the profile from a JSON snapshot (no pydantic there): it must not drift."""
    import json

    from core.config import load_config

    cfg = load_config("svd-vipseg").model_dump(mode="json")
    snapshot = json.loads((ROOT / "benchmarks" / "svd_vipseg_recipe.json").read_text())
    assert snapshot == {k: cfg[k] for k in ("model", "train", "generate")}, (
        "benchmarks/svd_vipseg_recipe.json differs from configs/svd-vipseg.yaml; rewrite it from load_config('svd-vipseg')")
