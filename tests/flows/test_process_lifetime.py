"""Processes end with their parent: a SIGKILLed command leaves no Prefect server, Ray or helper running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _alive(seen: dict[int, tuple[float, str]]) -> list[str]:
    left = []
    for pid, (created, cmd) in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {cmd}")
        except psutil.NoSuchProcess:
            pass
    return left


def _wait_gone(seen: dict, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _alive(seen)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _descendants(pid: int, seen: dict) -> None:
    for k in psutil.Process(pid).children(recursive=True):
        try:
            seen.setdefault(k.pid, (k.create_time(), " ".join(k.cmdline())[:120]))
        except psutil.Error:
            pass


def _env(tmp_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240"}
    for k in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL", "DRAGANYTHING_LIFETIME", "RAY_ADDRESS"):
        env.pop(k, None)
    return env


def test_sigkilled_parent_takes_its_children_and_their_orphans_with_it(tmp_path):
    """The watchdog alone: a child, and a grandchild already handed to PID 1, both end when the parent is SIGKILLed."""
    code = textwrap.dedent(
        """
        import os, subprocess, sys, time
        from core.lifetime import watch_descendants
        print(watch_descendants(), flush=True)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        # a daemon: forks, its parent exits at once, so it belongs to PID 1 from the start
        subprocess.run([sys.executable, "-c", "import os, time, sys\\nif os.fork() == 0:\\n    print(os.getpid(), flush=True); time.sleep(300)"],
                       stdout=open(sys.argv[1], "w"))
        print(child.pid, flush=True)
        time.sleep(300)
        """
    )
    daemon_file = tmp_path / "daemon.pid"
    proc = subprocess.Popen([sys.executable, "-c", code, str(daemon_file)], env=_env(tmp_path), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    watchdog, child = int(proc.stdout.readline()), int(proc.stdout.readline())
    deadline = time.monotonic() + 30
    while not daemon_file.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    daemon = int(daemon_file.read_text())
    seen = {p: (psutil.Process(p).create_time(), name) for p, name in ((child, "child"), (daemon, "daemon"), (watchdog, "watchdog"))}
    assert psutil.Process(daemon).ppid() != proc.pid  # not a descendant any more: only the token finds it
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _wait_gone(seen, 20) == []


@pytest.mark.slow
@pytest.mark.integration
def test_sigkilled_cli_leaves_no_prefect_server_or_ray_behind(sample_root, tmp_path):
    """`draganything labels` started its own Prefect server and local Ray; SIGKILL of it ends them all."""
    cmd = [sys.executable, "-m", "flows.cli", "labels", "--data-root", str(sample_root), "--workdir", str(tmp_path / "w"),
           "--set", "labels.embeddings=false"]
    proc = subprocess.Popen(cmd, env=_env(tmp_path), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, tuple[float, str]] = {}
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            _descendants(proc.pid, seen)
            names = " ".join(c for _, c in seen.values())
            if "raylet" in names and "uvicorn" in names and ("ray::" in names or "agent" in names):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the command finished before it could be killed"
        assert "raylet" in " ".join(c for _, c in seen.values())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = _wait_gone(seen, 30)
    finally:
        for line in _alive(seen):
            os.kill(int(line.split()[0]), signal.SIGKILL)
    assert left == [], left
