"""The layering of docs/architecture.md, checked on every import (parsed with ``ast``, lazy ones too).

- ``core`` imports nothing of ours but ``core``;
- ``model`` and ``eval`` import only ``core`` (and themselves);
- ``tasks`` never imports ``flows`` or ``dashboard``;
- ``dashboard`` imports no ``tasks``, except the Drag page (``views/drag.py``, ``drag_state.py``),
  which is an app that generates;
- no non-test ``.py`` file is over 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = ("core", "model", "eval", "tasks", "flows", "dashboard")
ALLOWED = {  # package -> the packages of ours it may import (itself always)
    "core": set(),
    "model": {"core"},
    "eval": {"core"},
    "tasks": {"core", "model", "eval"},
    "flows": {"core", "model", "eval", "tasks", "dashboard"},
    "dashboard": {"core", "model", "eval"},
}
DRAG_PAGE = {"dashboard/views/drag.py", "dashboard/drag_state.py"}  # may also import tasks
MAX_LINES = 500


def imported_packages(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, top-level package of ours) of every import in a file; relative imports resolved."""
    rel = path.relative_to(root)
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from .x import y / from .. import z: inside the file's own package tree
                parent = rel.parent.parts[: len(rel.parent.parts) - (node.level - 1)]
                names = [".".join([*parent, node.module] if node.module else parent)]
            else:
                names = [node.module or ""]
        else:
            continue
        out += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in OURS]
    return out


def violations(root: Path) -> list[str]:
    """Every import against the rules, and every file over the size limit, under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        top = rel.parts[0]
        if top in ("tests", ".venv", "build") or any(p.startswith(".") for p in rel.parts):
            continue
        n_lines = len(path.read_text().splitlines())
        if n_lines > MAX_LINES:
            found.append(f"{rel}: {n_lines} lines (at most {MAX_LINES} outside tests)")
        if top not in ALLOWED:
            continue  # benchmarks/ and other scripts may import anything
        allowed = ALLOWED[top] | {top} | ({"tasks"} if rel.as_posix() in DRAG_PAGE else set())
        for line, pkg in imported_packages(path, root):
            if pkg not in allowed:
                found.append(f"{rel}:{line}: {top} imports {pkg} (allowed: {', '.join(sorted(allowed))})")
    return found


def test_the_project_keeps_its_layering():
    assert violations(REPO) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_the_checker_fails_on_planted_violations(tmp_path):
    root = _tree(tmp_path, {
        "core/ok.py": "import numpy\nfrom core.tables import Workdir\n",
        "core/bad.py": "def f():\n    from tasks.labels import label_videos  # a lazy import counts too\n",
        "model/bad.py": "from .maps import paint_order\nfrom eval import objmc\n",
        "eval/ok.py": "import core.geometry\n",
        "tasks/bad.py": "from flows.runtime import run_flow\n",
        "dashboard/views/leaderboard.py": "import tasks.suites\n",
        "dashboard/views/drag.py": "from tasks import drag\n",
        "flows/big.py": "x = 1\n" * (MAX_LINES + 1),
        "tests/anything.py": "from flows import cli\n" + "y = 2\n" * 600,
        "benchmarks/script.py": "from dashboard import media\n",
    })
    found = violations(root)
    assert found == [
        "core/bad.py:2: core imports tasks (allowed: core)",
        "dashboard/views/leaderboard.py:1: dashboard imports tasks (allowed: core, dashboard, eval, model)",
        f"flows/big.py: {MAX_LINES + 1} lines (at most {MAX_LINES} outside tests)",
        "model/bad.py:2: model imports eval (allowed: core, model)",
        "tasks/bad.py:1: tasks imports flows (allowed: core, eval, model, tasks)",
    ]


def test_relative_imports_resolve_to_their_package(tmp_path):
    root = _tree(tmp_path, {"model/sub/x.py": "from .. import maps\nfrom ..tiny import build\nfrom . import y\n"})
    assert [p for _, p in imported_packages(root / "model/sub/x.py", root)] == ["model", "model", "model"]
