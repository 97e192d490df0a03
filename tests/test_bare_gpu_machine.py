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
    modules = sorted(set().union(*map(_imported_modules, GPU_FILES)) - {"__future__"})
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
