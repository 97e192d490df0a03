"""The running app in headless Chromium: leaderboard and vote page render, the videos play.

Drives Debian's ``chromium`` over the DevTools protocol (plain CDP over a
websocket; no webdriver needed). The browser is installed with apt-get when
missing; the test skips, saying why, only when that is impossible. Screenshots
go to the test's tmp dir and, if $DASHBOARD_SCREENSHOT_DIR is set, there too.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def _find_chromium() -> str | None:
    for c in CHROMIUM_CANDIDATES:
        if os.path.exists(c):
            return c
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium binary; installs Debian's package with apt-get when absent."""
    found = _find_chromium()
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("Chromium is not installed and apt-get is not available to install it")
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        pytest.skip("Chromium is not installed and installing it needs root (no sudo)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for cmd in ([*prefix, apt, "update"], [*prefix, apt, "install", "-y", "--no-install-recommends", "chromium"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        log.append(r.stdout[-2000:] + r.stderr[-2000:])
        if r.returncode != 0:
            pytest.skip(f"could not install Chromium with {' '.join(cmd)} (exit {r.returncode}): {log[-1][-500:]}")
    found = _find_chromium()
    if not found:
        pytest.skip("apt-get installed 'chromium' but no chromium binary was found")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float, what: str, interval: float = 0.2):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = cond()
            if last:
                return last
        except Exception as err:  # noqa: BLE001 - keep polling until the deadline
            last = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class CDP:
    """A minimal DevTools client: one websocket to the browser, one flattened page session."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=20)
        self.ids = itertools.count(1)
        self.session: str | None = None

    def call(self, method: str, timeout: float = 30.0, **params):
        msg_id = next(self.ids)
        msg = {"id": msg_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        end = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open_page(self, url: str) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
        self.navigate(url)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"].get("text"))
        return r["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def type_text(self, text: str) -> None:
        self.call("Input.insertText", text=text)
        key = dict(key="Enter", code="Enter", windowsVirtualKeyCode=13, nativeVirtualKeyCode=13)
        self.call("Input.dispatchKeyEvent", type="keyDown", text="\r", **key)
        self.call("Input.dispatchKeyEvent", type="keyUp", **key)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - any failure here means the same thing to the caller
            pass


@pytest.fixture
def running_app(filled_workdir, tmp_path):
    """The dashboard as `draganything dashboard --secrets FILE` runs it, on a loopback port, with a voter
    whose token `draganything voters add` made (the file holds only its digest)."""
    from dashboard import launch_command

    secrets = tmp_path / "secrets.toml"
    made = subprocess.run([sys.executable, "-m", "flows.cli", "voters", "add", "--secrets", str(secrets), "--name", "alice"],
                          capture_output=True, text=True, timeout=120, check=True)
    token = made.stdout.strip()
    assert token and token not in secrets.read_text()
    cwd = tmp_path / "cwd"
    cwd.mkdir()  # no .streamlit/ here: the tokens come from --secrets alone
    port = _free_port()
    env = {**os.environ, "DRAGANYTHING_WORKDIR": str(filled_workdir), "PYTHONPATH": str(APP.parents[1])}
    env.pop("DRAGANYTHING_VOTES_DB", None)
    cmd = launch_command(str(filled_workdir), port=port, address="127.0.0.1", secrets=str(secrets))
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: proc.poll() is None and urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).read() == b"ok", 45, "the Streamlit server")
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser(chromium, tmp_path):
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-dev-shm-usage", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
            f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "about:blank",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        _wait(lambda: port_file.exists() and len(port_file.read_text().splitlines()) >= 2, 30, "Chromium's DevTools port")
        port, path = port_file.read_text().splitlines()[:2]
        cdp = CDP(f"ws://127.0.0.1:{port}{path}")
        yield cdp
        cdp.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _keep(shot: Path) -> None:
    d = os.environ.get("DASHBOARD_SCREENSHOT_DIR")
    if d:
        os.makedirs(d, exist_ok=True)
        shutil.copy(shot, Path(d) / shot.name)


def test_leaderboard_and_vote_page_in_chromium(running_app, browser, tmp_path):
    running_app, token = running_app
    browser.open_page(running_app + "/")
    _wait(lambda: browser.js("document.querySelector('h1') && document.querySelector('h1').innerText.includes('Leaderboard')"), 40, "the Leaderboard title")
    _wait(lambda: browser.js("document.querySelectorAll('[data-testid=\"stDataFrame\"]').length") >= 1, 30, "the leaderboard table")
    assert not browser.js("document.querySelectorAll('[data-testid=\"stException\"]').length")
    time.sleep(1.0)  # let the grid paint
    shot1 = browser.screenshot(tmp_path / "leaderboard.png")
    assert shot1.stat().st_size > 10_000
    _keep(shot1)

    browser.navigate(running_app + "/vote")
    _wait(lambda: browser.js("!!document.querySelector('input[type=\"password\"]')"), 40, "the voter token field")
    browser.js("document.querySelector('input[type=\"password\"]').focus()")
    browser.type_text(token)
    _wait(lambda: browser.js("document.querySelectorAll('video').length") == 2, 60, "the two videos of the vote page")
    durations = _wait(
        lambda: (lambda d: d if d and all(x and x > 0 for x in d) else None)(
            browser.js("Array.from(document.querySelectorAll('video')).map(v => { if (v.readyState < 1) v.load(); return v.duration; })")
        ),
        40,
        "the videos' metadata (duration > 0)",
        interval=0.5,
    )
    assert all(0 < d < 60 for d in durations), durations
    errors = browser.js("Array.from(document.querySelectorAll('video')).map(v => v.error && v.error.code)")
    assert not any(errors), f"video element errors: {errors}"
    _wait(lambda: browser.js("document.body.innerText.includes('Motion control') && document.body.innerText.includes('Submit vote')"), 30, "the vote form")
    assert not browser.js("document.body.innerText.includes('ck-00')"), "the vote page must not name the checkpoints"
    time.sleep(0.5)
    shot2 = browser.screenshot(tmp_path / "vote.png")
    assert shot2.stat().st_size > 10_000
    _keep(shot2)
