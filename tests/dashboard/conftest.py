"""Fixtures for the dashboard tests: workdirs (empty / filled through Workdir.append) and an AppTest factory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PAGES = {
    "leaderboard": "views/leaderboard.py",
    "compare": "views/compare.py",
    "training": "views/training.py",
    "vote": "views/vote.py",
    "results": "views/results.py",
}
VOTERS = {"alice": "tok-alice", "bob": "sha256:" + __import__("hashlib").sha256(b"tok-bob").hexdigest()}


@pytest.fixture(scope="session")
def filled_template(tmp_path_factory) -> Path:
    """A workdir with realistic rows and real H.264 mp4 samples (built once per session)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))  # tests run with --import-mode=importlib; benchmarks/dashboard.py does the same
    from filled_workdir import fill_workdir

    root = tmp_path_factory.mktemp("filled") / "wd"
    fill_workdir(str(root), n_checkpoints=3, suites=("vipseg-val",), n_items=2, videos=True)
    return root


@pytest.fixture
def filled_workdir(filled_template, tmp_path) -> Path:
    """A private copy (tests vote, export and render overlays into it)."""
    dst = tmp_path / "wd"
    shutil.copytree(filled_template, dst)
    return dst


@pytest.fixture
def make_app(monkeypatch):
    """AppTest of the real entry script on a workdir, with optional voter tokens."""
    from streamlit.testing.v1 import AppTest

    def make(workdir: Path | None, voters: dict | None = VOTERS, secrets: dict | None = None):
        monkeypatch.delenv("DRAGANYTHING_VOTES_DB", raising=False)
        if workdir is None:
            monkeypatch.delenv("DRAGANYTHING_WORKDIR", raising=False)
        else:
            monkeypatch.setenv("DRAGANYTHING_WORKDIR", str(workdir))
        at = AppTest.from_file(str(APP), default_timeout=60)
        if voters:
            at.secrets["voters"] = dict(voters)
        for k, v in (secrets or {}).items():
            at.secrets[k] = v
        return at

    return make


def _open_page(at, page: str):
    at.run()
    if page != "leaderboard":
        at.switch_page(PAGES[page]).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


@pytest.fixture
def open_page():
    """open_page(at, name): run the app, switch to a page, assert it raised nothing."""
    return _open_page
