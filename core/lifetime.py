"""Processes end with their parent: what a command starts (a Prefect server, a local Ray) dies with it.

A process killed with SIGKILL runs no clean-up, and its children are handed to
PID 1: a temporary Prefect server and Ray's agents kept running for good. So the
first time a process starts such helpers it also starts a watchdog: a small
process in its own session that keeps a list of the parent's descendants and,
the moment the parent is gone (its pipe closes, or its pid dies), ends every one
of them (SIGTERM, then SIGKILL after a grace period). A child started in the last
instant before the parent died may already have been handed to PID 1 when the
watchdog looks; so every process started after the watchdog also carries a token
in its environment ($DRAGANYTHING_LIFETIME), and the watchdog ends those too.

Run as ``python -m core.lifetime PID TOKEN`` (what :func:`watch_descendants` does).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid

TOKEN_VAR = "DRAGANYTHING_LIFETIME"
POLL_S = 1.0
GRACE_S = 5.0
_watchdog: tuple[subprocess.Popen, int] | None = None


def watch_descendants() -> int | None:
    """Start this process's watchdog (once); returns its pid. DRAGANYTHING_NO_WATCHDOG=1 turns it off."""
    global _watchdog
    if _watchdog is not None and _watchdog[0].poll() is None:
        return _watchdog[0].pid
    if os.environ.get("DRAGANYTHING_NO_WATCHDOG") == "1" or not sys.platform.startswith("linux"):
        return None
    read_end, write_end = os.pipe()  # both ends close-on-exec: no child but the watchdog holds them
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "PYTHONPATH": root + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    env.pop(TOKEN_VAR, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.lifetime", str(os.getpid()), token], stdin=read_end, stdout=subprocess.DEVNULL,
        start_new_session=True, env=env,  # its own session: a Ctrl-C to the command's group does not stop it first
    )
    os.close(read_end)
    os.environ[TOKEN_VAR] = token  # inherited by everything this process starts from now on
    _watchdog = (proc, write_end)  # the write end stays open as long as this process lives
    return proc.pid


def _snapshot(parent, me: int, known: dict[int, float]) -> None:
    import psutil

    for child in parent.children(recursive=True):
        if child.pid != me:
            try:
                known.setdefault(child.pid, child.create_time())
            except psutil.Error:
                pass


def _carrying(token: str, me: int) -> dict[int, float]:
    """Processes whose environment carries ``token`` (started by the watched process, wherever they are now)."""
    import psutil

    found = {}
    for p in psutil.process_iter():
        try:
            if p.pid != me and p.environ().get(TOKEN_VAR) == token:
                found[p.pid] = p.create_time()
        except psutil.Error:
            continue
    return found


def _end(known: dict[int, float], me: int) -> int:
    """SIGTERM every still-running process of ``known`` (and its children), SIGKILL what is left after the grace."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    for pid, created in known.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() != created:
                continue  # the pid was reused by an unrelated process
            for q in [p, *p.children(recursive=True)]:
                if q.pid != me:
                    procs[q.pid] = q
        except psutil.Error:
            continue
    for p in procs.values():
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=GRACE_S)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    return len(procs)


def watch(pid: int, token: str = "") -> int:
    """The watchdog's loop: follow ``pid``'s descendants until it dies, then end them (and whatever carries ``token``)."""
    import psutil

    me = os.getpid()
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        parent = None  # died before this watchdog got going (a busy machine): only the token finds what it left
    known: dict[int, float] = {}
    while parent is not None:
        try:
            _snapshot(parent, me, known)
        except psutil.Error:
            break
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break  # the pipe closed: the parent is gone (however it died)
        try:
            if not parent.is_running() or parent.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.Error:
            break
    time.sleep(0.2)  # let children that exit on their own go first
    if token:
        for p, created in _carrying(token, me).items():
            known.setdefault(p, created)
    return _end(known, me)


if __name__ == "__main__":  # pragma: no cover - the watchdog process
    watch(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "")
