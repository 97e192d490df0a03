"""Shared fixtures: the sample dataset, one Ray and one Prefect server per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a busy machine needs more than 20 s


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need CUDA: skipped on a machine without it (``make test-gpu`` runs them where there is one)."""
    import torch

    if torch.cuda.is_available() or os.environ.get("DRAGANYTHING_GPU_DEVICE") == "cpu":  # cpu: the bare-box rehearsal
        return
    skip = pytest.mark.skip(reason="needs CUDA (make test-gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """The embedded sample dataset (8 videos, 16 frames), written once per session."""
    from core.sample_data import write_sample_dataset

    root = tmp_path_factory.mktemp("sample")
    write_sample_dataset(root, n_videos=8, n_frames=16, seed=0)
    return root


@pytest.fixture(scope="session")
def orchestration_ready(tmp_path_factory):
    """A real Prefect server on loopback (temporary SQLite) and a local Ray, started once."""
    import ray
    from prefect.server.api.server import SubprocessASGIServer

    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home}/prefect.db"
    server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    yield server.api_url
    if ray.is_initialized():
        ray.shutdown()
    server.stop()


# --- shared by the Streamlit app tests (dashboard pages and the Drag page)


@pytest.fixture
def empty_workdir(tmp_path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def _page_text(at) -> str:
    parts = []
    for kind in ("info", "warning", "error", "success", "caption", "markdown", "title"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


@pytest.fixture
def page_text():
    """page_text(at): every message-like text of an AppTest's current page, joined (is the helpful message there)."""
    return _page_text


# --- an S3 API on loopback (moto's standalone server, a real HTTP server), for object-store workdirs


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server on a free loopback port; AWS_* set so s3fs (and any subprocess) talks to it."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "wb")
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            assert server.poll() is None, "moto_server exited at start-up; see its log"
            time.sleep(0.1)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield url
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.kill()
    server.wait()
    log.close()


@pytest.fixture
def s3_url(s3_endpoint, request) -> str:
    """A fresh workdir URL in a bucket of its own (s3://<bucket>/work)."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    return f"s3://{name}-{uuid.uuid4().hex[:8]}/work"
