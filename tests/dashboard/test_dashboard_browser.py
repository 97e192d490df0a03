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
import re
import shutil
import socket
import subprocess
import sys
import tempfile
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
        self.call("Emulation.setDeviceMetricsOverride", width=1400, height=1600, deviceScaleFactor=1, mobile=False)
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
def app_workdir(request, tmp_path) -> Path:
    """$DASHBOARD_BROWSER_WORKDIR copied (e.g. a `make demo` workdir, for the docs' screenshots), else ``study_workdir``."""
    src = os.environ.get("DASHBOARD_BROWSER_WORKDIR")
    if not src:
        return request.getfixturevalue("study_workdir")
    dst = tmp_path / "demo-work"
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.fixture
def running_app(app_workdir, tmp_path):
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
    filled_workdir = app_workdir
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


# An interval as the pages print it: "a – b", "a - b" (spaces around the dash, so dates never match) or "[a, b]".
_NUM = r"[+-]?\d+(?:\.\d+)?"
INTERVAL = re.compile(rf"(?<![\w.])({_NUM})\s*%?(?: – | - )({_NUM})(?![\w.])|\[({_NUM}), ({_NUM})\]")
# (path, title, charts the page draws on a filled workdir)
PAGES = (("", "Leaderboard", 1), ("leaderboard", "Leaderboard", 1), ("compare", "Compare", 0), ("training", "Training", 2), ("drag", "Drag", 0))
MIN_CHART_PX = 200


def equal_ends(text: str) -> list[str]:
    """Every interval in ``text`` whose two ends print the same, e.g. "0.0 – 0.0" or "[2.3, 2.3]"."""
    return [m.group(0) for m in INTERVAL.finditer(text) if (m.group(1) or m.group(3)) == (m.group(2) or m.group(4))]


def test_equal_ends_finds_the_intervals_the_issue_saw():
    assert equal_ends("FID 0.0 – 0.0 and 2.3 [2.3, 2.3] and 0 - 0 %") == ["0.0 – 0.0", "[2.3, 2.3]", "0 - 0"]
    assert not equal_ends("2026-12-08 · 0.012 – 0.046 · +2.1 [+0.6 – +4.0] · step 1000 · 2.30 (no spread)")


_TEXT = """(() => {
  const parts = [document.body.innerText];
  for (const f of document.querySelectorAll('iframe')) { try { parts.push(f.contentDocument.body.innerText); } catch (e) {} }
  for (const c of document.querySelectorAll('[data-testid="stDataFrame"] [role="gridcell"], [data-testid="stDataFrame"] td'))
    parts.push(c.innerText || c.textContent);
  return parts.join('\\n');
})()"""
_CHARTS = """Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks'))
  .map(c => { const r = c.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; })"""


# Elements far below the fold may wait to draw until scrolled to: step through the page.
_SCROLL = """(() => { for (const m of [document.scrollingElement, ...document.querySelectorAll('[data-testid="stMain"], section.main')]) {
  if (m) m.scrollTop = (m.scrollTop + 800 >= m.scrollHeight - m.clientHeight) ? 0 : m.scrollTop + 800; } return 1; })()"""


def _settle(browser, title: str, charts: int = 0) -> None:
    _wait(lambda: browser.js(f"!!document.querySelector('h1') && document.querySelector('h1').innerText.includes({title!r})"), 60, f"the {title} title")
    # the script has finished when Streamlit's status widget says nothing is running, twice in a row
    idle = ("!document.querySelector('[data-testid=\"stStatusWidget\"], [data-testid=\"stSkeleton\"]') && "
            "Array.from(document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]')).every(c => c.querySelector('canvas, svg'))")
    _wait(lambda: browser.js(idle), 90, f"the {title} page to finish running")
    try:
        _wait(lambda: browser.js(_SCROLL) is not None and len(browser.js(_CHARTS)) >= charts, 60, f"the {title} page's {charts} chart(s)")
    except AssertionError:
        _keep(browser.screenshot(Path(tempfile.mkdtemp()) / f"timeout-{title}.png"))
        raise
    browser.js("window.scrollTo(0, 0); document.querySelectorAll('[data-testid=\"stMain\"], section.main').forEach(m => m.scrollTo(0, 0))")
    time.sleep(1.5)
    _wait(lambda: browser.js(idle), 60, f"the {title} page to finish running")


def _check_page(browser, name: str, tmp_path: Path) -> dict:
    assert not browser.js("document.querySelectorAll('[data-testid=\"stException\"]').length"), f"{name}: the page raised"
    text = browser.js(_TEXT)
    assert "Page not found" not in text, f"/{name} does not resolve"
    bad = equal_ends(text)
    assert not bad, f"{name}: intervals whose ends print equal: {bad}"
    charts = browser.js(_CHARTS)
    small = [c for c in charts if c[1] < MIN_CHART_PX]
    assert not small, f"{name}: charts under {MIN_CHART_PX} px high (width, height): {small}"
    shot = browser.screenshot(tmp_path / f"{name or 'home'}.png")
    assert shot.stat().st_size > 10_000
    if name != "home":  # the same page as /leaderboard
        _keep(shot)
    return {"text": text, "charts": charts}


def test_every_page_resolves_reads_honestly_and_has_tall_charts(running_app, browser, tmp_path):
    base, _token = running_app
    browser.open_page(base + "/")
    seen = {}
    for path, title, charts in PAGES:
        browser.navigate(f"{base}/{path}")
        _settle(browser, title, charts)
        seen[path] = _check_page(browser, path or "home", tmp_path)
    assert "ref: warp" in seen["leaderboard"]["text"] or "warp" not in seen["leaderboard"]["text"]


_PLAYER = "Array.from(document.querySelectorAll('iframe')).map(f => { try { return f.contentDocument; } catch (e) { return null; } })" \
          ".find(d => d && d.querySelectorAll('video').length === 2)"


def _player(browser, expr: str):
    return browser.js(f"(() => {{ const d = {_PLAYER}; if (!d) return null; const v = Array.from(d.querySelectorAll('video')); return {expr}; }})()")


def test_the_study_is_blind_synced_and_reveals_after_each_vote(running_app, browser, tmp_path):
    base, token = running_app
    browser.open_page(base + "/vote")
    _wait(lambda: browser.js("!!document.querySelector('input[type=\"password\"]')"), 60, "the voter token field")
    browser.js("document.querySelector('input[type=\"password\"]').focus()")
    browser.type_text(token)
    _wait(lambda: _player(browser, "v.length") == 2, 90, "the synced pair of videos")
    _wait(lambda: _player(browser, "v.every(x => x.readyState >= 2)"), 60, "both videos to load")
    sizes = _player(browser, "v.map(x => { const r = x.getBoundingClientRect(); return [r.width, r.height]; })")
    assert sizes[0] == sizes[1] and sizes[0][0] >= 300, f"both videos at one display size: {sizes}"
    # autoplay + loop, and B follows A
    assert _player(browser, "v.every(x => x.loop && x.muted && x.autoplay)")
    _wait(lambda: _player(browser, "v.every(x => !x.paused && x.currentTime > 0)"), 30, "both videos to autoplay")
    # the frame slider pauses both and puts them on one frame
    browser.js(f"(() => {{ const d = {_PLAYER}; const s = d.getElementById('frame'); s.value = 3; s.dispatchEvent(new Event('input')); }})()")
    _wait(lambda: _player(browser, "v.every(x => x.paused) && Math.abs(v[0].currentTime - v[1].currentTime) < 1e-3 && v[0].currentTime > 0"),
          20, "the slider to step both videos to frame 4")
    assert "frame 4 /" in browser.js(_TEXT)
    text = browser.js(_TEXT)
    assert "Motion control" in text and "Submit vote" in text
    for secret in ("ck-00", "warp", "nocontrol", "control off"):
        assert secret not in text, f"the vote page must not name what it shows ({secret!r})"
    _check_page(browser, "vote", tmp_path)

    reveals = []
    for _ in range(3):
        n = browser.js("""(() => { let n = 0; for (const g of document.querySelectorAll('[data-testid="stRadio"]')) {
            if (!/Motion control|Video quality/.test(g.innerText)) continue;
            const l = Array.from(g.querySelectorAll('label')).find(x => x.innerText.trim().startsWith('A (left)'));
            if (l) { l.click(); n++; } } return n; })()""")
        assert n >= 1, "the vote form's questions"
        time.sleep(0.5)
        browser.js("Array.from(document.querySelectorAll('button')).find(b => b.innerText.includes('Submit vote')).click()")
        _wait(lambda: browser.js(_TEXT).count("Last pair revealed") == 1 and browser.js("!document.querySelector('[data-testid=\"stStatusWidget\"]')"),
              60, "the reveal after the vote")
        line = next(x for x in browser.js(_TEXT).splitlines() if "Last pair revealed" in x)
        assert "A (left) was" in line and "B (right) was" in line, line
        assert "ref:" not in line and "control off" not in line, f"the default pool holds trained checkpoints only: {line}"
        reveals.append(line)
        _wait(lambda: _player(browser, "v.length") == 2, 60, "the next pair")
    _check_page(browser, "vote-revealed", tmp_path)

    browser.navigate(base + "/results")
    _settle(browser, "Study results", 2)
    res = _check_page(browser, "results", tmp_path)
    assert len(res["charts"]) >= 2, "the Bradley-Terry forest plot and the coverage heatmap"
    assert "n too small" in res["text"], "a pair with a few votes has no interval to show"
