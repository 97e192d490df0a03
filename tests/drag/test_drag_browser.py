"""The Drag page in headless Chromium: upload, click the entity on the image, click its path, generate.

Reuses the dashboard browser test's DevTools client and fixtures (Chromium found or
installed with apt-get; skipped, saying why, only when that is impossible). The last
screenshot is the README's ``docs/drag_page.png``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"
SCREENSHOT = REPO / "docs" / "drag_page.png"

_spec = importlib.util.spec_from_file_location("_dashboard_browser", REPO / "tests" / "dashboard" / "test_dashboard_browser.py")
_browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_browser)
chromium = _browser.chromium  # fixtures, re-used as they are
browser = _browser.browser
_wait, _free_port = _browser._wait, _browser._free_port


@pytest.fixture
def drag_app(drag_workdir, profile, tmp_path):
    """`streamlit run dashboard/app.py` on a workdir with the tiny checkpoint (generation in the page's process)."""
    port = _free_port()
    env = {**os.environ, "DRAGANYTHING_WORKDIR": str(drag_workdir), "DRAGANYTHING_CONFIG": profile(executor="inline"),
           "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port), "--server.address", "127.0.0.1",
        "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--", "--workdir", str(drag_workdir),
    ]
    (tmp_path / ".streamlit").mkdir(exist_ok=True)  # a single-user dashboard on loopback: anyone there may drag
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[drag]\nallowed = ["*"]\n')
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: proc.poll() is None and urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).read() == b"ok", 45, "the Streamlit server")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _frame_rect(cdp) -> list[float]:
    return cdp.js(
        "(() => { const f = document.querySelector('iframe[title*=\"streamlit_image_coordinates\"]');"
        " const r = f.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()"
    )


def _click_image(cdp, x: float, y: float, hw: tuple[int, int]) -> None:
    """A real mouse click on the clickable image (inside the component's iframe) at image pixel (x, y)."""
    left, top, width, height = _frame_rect(cdp)
    px = left + (x + 0.5) * width / hw[1] - 0.5
    py = top + (y + 0.5) * height / hw[0] - 0.5
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        extra = {} if kind == "mouseMoved" else {"button": "left", "clickCount": 1}
        cdp.call("Input.dispatchMouseEvent", type=kind, x=px, y=py, **extra)


def _text(cdp) -> str:
    return cdp.js("document.body.innerText") or ""


def _idle(cdp) -> bool:
    """Streamlit finished the rerun: no 'Running...' status widget."""
    return not cdp.js("!!document.querySelector('[data-testid=\"stStatusWidget\"]')")


def _scene():
    """A 360x240 photo scene (centre-cropped to 240x240 by the page): a cat-photo ellipse on the coffee photo."""
    import cv2
    from skimage import data

    bg = cv2.resize(data.coffee(), (360, 240))
    obj = cv2.resize(data.chelsea(), (360, 240))
    mask = np.zeros((240, 360), np.uint8)
    cv2.ellipse(mask, (60 + 80, 150), (34, 26), -15, 0, 360, 1, -1)
    img = bg.copy()
    img[mask.astype(bool)] = obj[mask.astype(bool)]
    return img


def test_drag_page_in_chromium(drag_app, browser, tmp_path):
    import cv2

    pytest.importorskip("streamlit_image_coordinates", reason="the page's click component (pip install streamlit-image-coordinates)")

    upload = tmp_path / "scene.jpg"
    cv2.imwrite(str(upload), cv2.cvtColor(_scene(), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])

    browser.open_page(drag_app + "/drag")
    browser.call("Emulation.setDeviceMetricsOverride", width=1400, height=2800, deviceScaleFactor=1, mobile=False)
    _wait(lambda: "Upload an image" in _text(browser), 60, "the Drag page")
    _wait(lambda: browser.js("!!document.querySelector('input[type=file]')"), 30, "the file input")
    root = browser.call("DOM.getDocument", depth=-1, pierce=False)["root"]["nodeId"]
    node = browser.call("DOM.querySelector", nodeId=root, selector="input[type=file]")["nodeId"]
    browser.call("DOM.setFileInputFiles", nodeId=node, files=[str(upload)])
    _wait(lambda: browser.js("!!document.querySelector('iframe[title*=\"streamlit_image_coordinates\"]')"), 60, "the clickable image")
    _wait(lambda: _frame_rect(browser)[3] > 300, 30, "the image to load in its frame")
    time.sleep(0.5)
    hw = (240, 240)  # the 320x240 scene centre-cropped to the tiny model's 1:1

    _click_image(browser, 80, 150, hw)  # grab the cat (the ellipse at (140, 150) before the crop)
    _wait(lambda: "path: 1 point(s)" in _text(browser), 60, "the selection of entity 1")
    for n, point in enumerate(((130, 100), (195, 120)), start=2):  # where it goes
        _wait(lambda: _idle(browser), 30, "the page to settle")
        time.sleep(0.5)
        _click_image(browser, *point, hw)
        _wait(lambda n=n: f"path: {n} point(s)" in _text(browser), 30, f"path point {n} to register")
    _wait(lambda: "2D Gaussian map" in _text(browser), 30, "the model's maps")

    # generate with a couple of steps (the tiny model: seconds)
    browser.js("(() => { const i = Array.from(document.querySelectorAll('input[aria-label=\"Denoising steps\"]'))[0];"
               " i.focus(); i.select(); })()")
    browser.type_text("2")
    _wait(lambda: _idle(browser), 30, "the steps to apply")
    time.sleep(0.8)
    browser.js("Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim().endsWith('Generate')).click()")
    _wait(lambda: browser.js("document.querySelectorAll('video').length") == 1, 120, "the generated video")
    duration = _wait(lambda: browser.js("(() => { const v = document.querySelector('video'); if (v.readyState < 1) v.load();"
                                        " return v.duration; })()"), 40, "the video's metadata", interval=0.5)
    assert 0 < duration < 30 and not browser.js("document.querySelector('video').error")
    assert not browser.js("document.querySelectorAll('[data-testid=\"stException\"]').length")
    assert "tiny-000-seed0-steps2-" in _text(browser)

    browser.js("window.scrollTo(0, 0); document.querySelector('[data-testid=\"stMain\"]')?.scrollTo(0, 0)")
    time.sleep(1.5)
    shot = browser.screenshot(tmp_path / "drag_page.png")
    assert shot.stat().st_size > 50_000
    if os.environ.get("UPDATE_SCREENSHOTS"):  # `UPDATE_SCREENSHOTS=1 make test` refreshes the README's picture
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(shot, SCREENSHOT)
    _browser._keep(shot)
