"""The code passes the project's ruff rules (pyproject.toml [tool.ruff]), and every exception to them says why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOQA = re.compile(r"#\s*noqa\b(?P<rest>.*)$")
REASONED = re.compile(r"^:\s*[A-Z]+[0-9]+(\s*,\s*[A-Z]+[0-9]+)*\s+-\s+\S")


def unexplained_noqa(text: str) -> list[int]:
    """Line numbers of ``# noqa`` comments without ``: CODE - reason`` (a bare or code-only noqa hides why)."""
    bad = []
    for no, line in enumerate(text.splitlines(), start=1):
        m = NOQA.search(line)
        if m and not REASONED.match(m.group("rest")):
            bad.append(no)
    return bad


def test_an_unexplained_noqa_is_found():
    planted = "import os  # noqa\nimport re  # noqa: F401\nimport sys  # noqa: F401 - re-exported for the CLI\n"
    assert unexplained_noqa(planted) == [1, 2]


def test_every_noqa_in_the_repository_gives_its_reason():
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    files = [f for f in files if f != "tests/test_lint.py"]  # this file plants bare noqa comments in strings
    bad = [f"{f}:{n}" for f in files for n in unexplained_noqa((REPO / f).read_text())]
    assert not bad, "noqa without ': CODE - reason': " + ", ".join(bad)


def test_ruff_finds_nothing():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
