"""Fixtures for the drag tests: a workdir holding a tiny trained checkpoint, test images, the Drag page."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
CHECKPOINT_ID = "tiny-000"


def add_checkpoint(workdir: Path, checkpoint_id: str = CHECKPOINT_ID, step: int = 0, created_at: dt.datetime | None = None,
                   weights: bool = True) -> dict:
    """A checkpoint the way training writes one: a fresh controller saved under the workdir plus its table row."""
    from core.config import load_config
    from core.tables import Workdir
    from model.pipeline import build_pipeline

    cfg = load_config("tiny")
    wd = Workdir(str(workdir))
    if weights:
        build_pipeline(cfg.model).controlnet.save_pretrained(wd.path("checkpoints", checkpoint_id, "controlnet"))
    row = dict(
        checkpoint_id=checkpoint_id, parent=None, config=json.dumps(cfg.model_dump(mode="json")), config_hash=cfg.digest(),
        step=step, path=f"checkpoints/{checkpoint_id}", created_at=created_at or dt.datetime.now(dt.UTC),
    )
    wd.append("checkpoints", [row])
    return row


@pytest.fixture(scope="session")
def tiny_checkpoint_template(tmp_path_factory) -> Path:
    """A workdir with one trained tiny checkpoint (built once per session)."""
    root = tmp_path_factory.mktemp("drag-template") / "wd"
    root.mkdir()
    add_checkpoint(root)
    return root


@pytest.fixture
def drag_workdir(tiny_checkpoint_template, tmp_path) -> Path:
    """A private copy of the tiny-checkpoint workdir (tests write videos and cases into it)."""
    dst = tmp_path / "wd"
    shutil.copytree(tiny_checkpoint_template, dst)
    return dst


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A 320x240 photo scene: the cat photo inside an ellipse on the coffee photo, and the ellipse's mask."""
    from skimage import data

    bg = cv2.resize(data.coffee(), (320, 240))
    obj = cv2.resize(data.chelsea(), (320, 240))
    truth = np.zeros((240, 320), np.uint8)
    cv2.ellipse(truth, (170, 120), (70, 50), 20, 0, 360, 1, -1)
    truth = truth.astype(bool)
    img = bg.copy()
    img[truth] = obj[truth]
    return img, truth


def encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture
def scene_png() -> bytes:
    return encode(scene()[0])


@pytest.fixture
def ray_cleanup():
    """Shut down a Ray that the test started (later tests start theirs with their own settings)."""
    import ray

    was = ray.is_initialized()
    yield
    if not was and ray.is_initialized():
        ray.shutdown()


DRAGGER = ("dragger", "tok-drag")  # a voter signed in on the Drag page (generating and saving need an identity)


@pytest.fixture
def drag_page(monkeypatch):
    """drag_page(workdir, config=None, signed_in=True, secrets=None, user=None): an AppTest of the real app on the Drag page."""
    import hashlib

    from streamlit.testing.v1 import AppTest

    def make(workdir: Path, config: str | None = None, signed_in: bool = True, secrets: dict | None = None, user: dict | None = None):
        monkeypatch.setenv("DRAGANYTHING_WORKDIR", str(workdir))
        if config:
            monkeypatch.setenv("DRAGANYTHING_CONFIG", config)
        else:
            monkeypatch.delenv("DRAGANYTHING_CONFIG", raising=False)
        at = AppTest.from_file(str(APP), default_timeout=360)  # a Ray generation on a loaded 2-core machine; 3x headroom
        at.secrets["voters"] = {DRAGGER[0]: DRAGGER[1]}
        for k, v in (secrets or {}).items():
            at.secrets[k] = v
        if user is not None:
            at.user = user
        if signed_in:
            at.session_state["voter_identity"] = {"voter": DRAGGER[0], "digest": hashlib.sha256(DRAGGER[1].encode()).hexdigest()}
        at.run()
        at.switch_page("views/drag.py").run()
        assert not at.exception, [e.message for e in at.exception]
        return at

    return make


def _inline_config(tmp_path: Path, **drag) -> str:
    """A YAML profile: tiny with ``drag.*`` overridden (e.g. executor='inline')."""
    import yaml

    from core.config import CONFIG_DIR

    tree = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    tree.setdefault("drag", {}).update(drag)
    tree["profile"] = "tiny"
    path = tmp_path / "drag-profile.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


@pytest.fixture
def profile(tmp_path):
    """profile(**drag): a YAML profile path, tiny with drag settings overridden."""
    return lambda **drag: _inline_config(tmp_path, **drag)


@pytest.fixture
def make_checkpoint():
    """make_checkpoint(workdir, id, step=0, created_at=None, weights=True) -> the row written."""
    return add_checkpoint


@pytest.fixture
def scene_image() -> tuple[np.ndarray, np.ndarray]:
    return scene()
