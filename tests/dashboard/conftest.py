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


@pytest.fixture
def study_workdir(filled_workdir) -> Path:
    """``filled_workdir`` plus what a real workdir's study pool holds beside the trained checkpoints: the
    ``warp`` reference at 256x256 and ``ck-002~nocontrol``, with samples of every item, and a trained
    ``ck-003`` whose videos are half the others' size (a fair page brings both to one display size)."""
    import numpy as np

    from core.checkpoints import TRAINED, checkpoint_row, control_off_row, reference_row
    from core.media import write_mp4
    from core.tables import Workdir
    from dashboard.media import read_video, resize_frames

    wd = Workdir(str(filled_workdir))
    cks = wd.read("checkpoints")
    last = cks[cks["checkpoint_id"] == "ck-002"].iloc[0].to_dict()
    wd.append("checkpoints", [reference_row("warp"), control_off_row(last),
                              checkpoint_row("ck-003", TRAINED, last["config"], last["config_hash"], 400, "checkpoints/ck-003", "ck-002")])
    samples = wd.read("samples")
    rows = []
    for ck, hw in (("warp", (256, 256)), ("ck-002~nocontrol", None), ("ck-003", (48, 64))):
        for r in samples[samples["checkpoint_id"] == ("ck-000" if ck != "ck-002~nocontrol" else "ck-002")].to_dict("records"):
            frames, fps = read_video(wd, r["video_path"])
            if hw is not None:
                frames = resize_frames(frames, hw)
            rel = f"samples/{ck}/{r['suite']}/{r['item_id']}.mp4"
            write_mp4(wd, rel, np.ascontiguousarray(frames), fps)
            rows.append({**r, "checkpoint_id": ck, "video_path": rel, "height": frames.shape[1], "width": frames.shape[2]})
    wd.append("samples", rows)
    metrics = wd.read("metrics")
    ref = metrics[metrics["checkpoint_id"] == "ck-000"].assign(checkpoint_id="warp")
    wd.append("metrics", ref.to_dict("records"))
    return filled_workdir
