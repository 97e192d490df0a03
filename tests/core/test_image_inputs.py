"""Inputs are validated before they are decoded: pixel budget from the header, masks whose ids cannot be trusted."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.imageheader import HeaderError, image_header
from core.vipseg import Category, VideoError, read_frame, read_mask

ROOT = Path(__file__).resolve().parents[2]


def _bomb(path: Path, height: int = 30000, width: int = 30000) -> Path:
    """A real ~20 KB JPEG whose frame header claims ``height`` x ``width``."""
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 80])
    data = bytearray(buf.tobytes())
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def test_a_small_jpeg_claiming_30000x30000_is_refused_without_allocating_it(tmp_path):
    bomb = _bomb(tmp_path / "00000000.jpg")
    assert bomb.stat().st_size < 40_000
    code = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(ROOT)!r})
        from core.vipseg import VideoError, read_frame
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            read_frame({str(bomb)!r})
            print("decoded")
        except VideoError as err:
            print("refused:", err)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    verdict, grown_mb = out.stdout.strip().splitlines()
    assert verdict.startswith("refused:") and "claims 30000x30000" in verdict and "not decoded" in verdict
    assert int(grown_mb) < 100, f"reading the header grew the process by {grown_mb} MB"


def test_the_budget_is_configurable_and_real_frames_pass(tmp_path):
    img = np.zeros((100, 200, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "f.png"), img)
    assert read_frame(tmp_path / "f.png").shape == (100, 200, 3)
    with pytest.raises(VideoError, match="over the 0 MP budget"):
        read_frame(tmp_path / "f.png", max_pixels=10_000)


@pytest.mark.parametrize("data, why", [(b"", "empty"), (b"GIF89a....", "not a JPEG or PNG"), (b"\xff\xd8\xff\xe0\x00", "truncated")])
def test_headers_that_say_nothing_are_refused(data, why):
    with pytest.raises(HeaderError, match=why):
        image_header(data)


def _mask(path: Path, ids: np.ndarray) -> Path:
    cv2.imwrite(str(path), ids)
    return path


CATEGORIES = {1: Category(1, "sky", False), 61: Category(61, "cat", True), 62: Category(62, "cup", True)}


def test_an_8bit_mask_cannot_hold_the_categories_thing_ids(tmp_path):
    true_ids = np.array([[1, 2, 3], [6101, 6201, 6101]], np.int64)
    wrapped = _mask(tmp_path / "m.png", (true_ids % 256).astype(np.uint8))  # [57, 213]: silently wrong before
    with pytest.raises(VideoError, match="8-bit PNG, but the categories file has thing categories up to 62"):
        read_mask(wrapped, categories=CATEGORIES)
    sixteen = _mask(tmp_path / "m16.png", true_ids.astype(np.uint16))
    assert read_mask(sixteen, categories=CATEGORIES).tolist() == true_ids.tolist()


def test_an_8bit_mask_with_thing_ids_and_no_categories_is_refused(tmp_path):
    with pytest.raises(VideoError, match="holding thing ids"):
        read_mask(_mask(tmp_path / "t.png", np.array([[1, 213]], np.uint8)), categories={})
    stuff_only = _mask(tmp_path / "s.png", np.array([[1, 57, 124]], np.uint8))
    assert read_mask(stuff_only, categories={}).tolist() == [[1, 57, 124]]  # 8 bits hold stuff ids fine


def _peak_rss_mb(call: str) -> tuple[str, int]:
    """Run ``call`` (a reader on a bomb) in a fresh interpreter: (what it printed, the process's peak RSS in MB)."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from core.rejects import ItemError
        from core.vipseg import read_frame
        from tasks.user_study import read_user_study_case
        try:
            {call}
            print("decoded")
        except ItemError as err:
            print("refused:", err)
        # VmHWM is this process's own peak (ru_maxrss would carry the forking pytest's over exec)
        print(next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    verdict, peak = out.stdout.strip().splitlines()[-2:]
    return verdict, int(peak)


def test_a_2gb_frame_claiming_a_small_size_is_refused_from_its_size_before_it_is_read(tmp_path):
    ok, buf = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))
    frame = tmp_path / "00000000.jpg"
    frame.write_bytes(buf.tobytes())
    with open(frame, "r+b") as f:
        f.truncate(2 * 2**30)  # a sparse 2 GB file: reading it whole cost 4.3 GB of RSS
    verdict, peak = _peak_rss_mb(f"read_frame(Path({str(frame)!r}))")
    assert verdict.startswith("refused:") and "2147.5 MB, more than a 64x48 image can need" in verdict, verdict
    assert "error" not in verdict.lower()  # a sentence, not OpenCV's assertion
    assert peak < 500, f"peak RSS {peak} MB"


def test_a_user_study_image_claiming_30000x30000_is_refused_before_decoding(tmp_path):
    from tasks.user_study import write_user_study_case

    case = tmp_path / "case"
    masks = np.zeros((1, 120, 160), bool)
    masks[0, 40:80, 50:90] = True
    write_user_study_case(case, np.zeros((120, 160, 3), np.uint8), masks, [np.array([[60.0, 60.0], [70.0, 65.0]])])
    _bomb(case / "demo.jpg")  # 30 KB claiming 30000x30000: took 123 s and 10.1 GB, then loaded as an item
    verdict, peak = _peak_rss_mb(f"read_user_study_case(Path({str(case)!r}), (64, 64), 4)")
    assert verdict.startswith("refused:") and "user-study image" in verdict and "claims 30000x30000" in verdict, verdict
    assert peak < 500, f"peak RSS {peak} MB"
    _bomb(case / "mask_1.jpg")
    write_ok = cv2.imencode(".jpg", np.zeros((120, 160, 3), np.uint8))[1].tobytes()
    (case / "demo.jpg").write_bytes(write_ok)
    verdict, peak = _peak_rss_mb(f"read_user_study_case(Path({str(case)!r}), (64, 64), 4)")
    assert verdict.startswith("refused:") and "entity 1: mask" in verdict and "claims 30000x30000" in verdict, verdict
    assert peak < 500, f"peak RSS {peak} MB"


def test_a_png_upload_claiming_too_many_pixels_is_refused_before_decoding():
    from tasks.drag import image as drag_image
    from tasks.drag.common import DragError

    ok, buf = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))
    data = bytearray(buf.tobytes())
    data[16:24] = struct.pack(">II", 8000, 8000)  # IHDR: 64 MP, under PIL's own bomb limit, over the budget
    with pytest.raises(DragError, match="claims 8000x8000 pixels .* over the 40 MP budget"):
        drag_image.load_image(bytes(data), max_side=512)


def test_an_upload_in_another_format_gets_the_same_budget():
    from tasks.drag import image as drag_image
    from tasks.drag.common import DragError

    ok, buf = cv2.imencode(".bmp", np.zeros((32, 32, 3), np.uint8))
    data = bytearray(buf.tobytes())
    data[18:26] = struct.pack("<ii", 8000, 8000)  # BITMAPINFOHEADER width, height: 64 MP claimed in 3 KB
    with pytest.raises(DragError, match="claims 8000x8000 pixels .* over the 40 MP budget"):
        drag_image.load_image(bytes(data), max_side=512)
    ok, small = cv2.imencode(".bmp", np.zeros((32, 48, 3), np.uint8))
    assert drag_image.load_image(small.tobytes(), max_side=512).hw == (32, 48)  # a real BMP still opens
