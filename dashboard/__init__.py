"""The Streamlit dashboard: leaderboard, checkpoint compare, training curves, blind pairwise votes.

Only :func:`launch` lives here so that importing the package stays cheap (the
pipeline imports :mod:`dashboard.votes_store` to export votes without Streamlit
pages being loaded).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"


LOOPBACK = "127.0.0.1"


def launch_command(
    workdir_url: str, port: int = 8501, headless: bool = True, address: str | None = None, secrets: str | None = None
) -> list[str]:
    """The ``streamlit run`` command line :func:`launch` runs; it listens on 127.0.0.1 unless ``address`` says otherwise."""
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(int(port)),
        "--server.headless", "true" if headless else "false",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--client.toolbarMode", "viewer",
    ]
    cmd += ["--server.address", address or LOOPBACK]  # closed by default: voter tokens must not cross a network in clear
    if secrets:
        cmd += ["--secrets.files", str(Path(secrets).expanduser().resolve())]
    return cmd + ["--", "--workdir", workdir_url]


def launch(workdir_url: str, port: int = 8501, headless: bool = True, address: str | None = None, secrets: str | None = None) -> int:
    """Run the dashboard on ``workdir_url`` and block until it stops; returns Streamlit's exit code.

    The workdir is passed both as ``-- --workdir`` and as $DRAGANYTHING_WORKDIR. A
    local workdir is made absolute first. Secrets (voter tokens, OIDC) are read
    by Streamlit from ``.streamlit/secrets.toml`` in the current directory or
    ``~/.streamlit/secrets.toml``, or from ``secrets`` alone when it is given.
    """
    if secrets and not Path(secrets).expanduser().is_file():
        raise FileNotFoundError(f"secrets file {secrets} does not exist; make one with `draganything voters add --secrets {secrets} --name NAME`")
    if "://" not in workdir_url:
        workdir_url = str(Path(workdir_url).expanduser().resolve())
        if not Path(workdir_url).is_dir():
            raise FileNotFoundError(f"workdir {workdir_url} does not exist; run the pipeline first (e.g. `draganything pipeline --workdir {workdir_url}`)")
    env = {**os.environ, "DRAGANYTHING_WORKDIR": workdir_url, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    root = str(APP.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    from core.lifetime import watch_descendants

    watch_descendants()  # Streamlit (and a Ray the Drag page starts) end with this command, even a SIGKILLed one
    proc = subprocess.Popen(launch_command(workdir_url, port, headless, address, secrets), env=env)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # a plain `kill` stops Streamlit as Ctrl-C does
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
