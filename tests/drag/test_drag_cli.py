"""``draganything drag``: a video from clicks and paths with the tiny checkpoint; each bad input one message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app


def _image(tmp_path, scene_png) -> Path:
    p = tmp_path / "scene.png"
    p.write_bytes(scene_png)
    return p


def test_cli_writes_an_h264_mp4_and_the_case(drag_workdir, tmp_path, scene_png):
    import av

    from tasks.user_study import read_user_study_case

    out = tmp_path / "out" / "video.mp4"
    args = [
        "drag", "--image", str(_image(tmp_path, scene_png)),
        "--click", "170,120", "--path", "170,120 230,100 300,150",   # 300 is off the 240x240 crop: clipped
        "--click", "all", "--path", "0,0 8,0",                        # the camera pans
        "--negative", "1:20,20", "--workdir", str(drag_workdir), "--out", str(out), "--steps", "2",
        "--save-case", str(tmp_path / "case"), "--preview", str(tmp_path / "preview.png"),
    ]
    r = CliRunner().invoke(app, args)  # in-process: the model's imports are shared with the other tests
    assert r.exit_code == 0, (r.output + r.stderr)[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["checkpoint"] == "tiny-000" and summary["entities"] == 2 and summary["segmentation"] == "grabcut"
    assert summary["frames"] == 8 and (summary["height"], summary["width"]) == (240, 240)  # centre-cropped to the model's 1:1
    assert any("centre-cropped from 320x240 to 240x240" in n for n in summary["notes"])
    assert any("entity 1 path" in n and "outside" in n for n in summary["notes"])
    assert "note: " in r.stderr and "denoising" in r.stderr
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (240, 240, 3)
    assert (tmp_path / "preview.png").stat().st_size > 1000
    item = read_user_study_case(tmp_path / "case", resolution=(240, 240), frames=8)
    assert item.masks.shape == (2, 240, 240) and item.masks[1].all()
    assert np.allclose(item.trajectories[1, -1] - item.trajectories[1, 0], (8, 0), atol=0.05)


def _run(args):
    r = CliRunner().invoke(app, ["drag", *args])
    return r.exit_code, r.output + (r.stderr if r.stderr_bytes is not None else "")


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--click", "170,120", "--click", "60,60", "--path", "1,1"], "give one --path per --click"),
        (["--click", "170;120", "--path", "1,1"], "must be X,Y"),
        (["--click", "170,120", "--path", "170,120", "--negative", "3:1,1"], "names entity 3, but there are 1"),
        (["--click", "170,120", "--path", "170,120", "--mask-choice", "big"], "--mask-choice must be best, 0, 1 or 2"),
        (["--click", "1,1", "--path", "1,1"] * 9, "9 entities selected, but at most 8"),
        (["--click", "all", "--path", "1,1", "--click", "all", "--path", "1,1"], "more than once"),
    ],
)
def test_cli_bad_clicks_and_paths(drag_workdir, tmp_path, scene_png, extra, says):
    code, text = _run(["--image", str(_image(tmp_path, scene_png)), "--workdir", str(drag_workdir), "--out", str(tmp_path / "v.mp4"), *extra])
    assert code == 2 and says in text and "Traceback" not in text, text


def test_cli_bad_image_workdir_and_checkpoint(drag_workdir, empty_workdir, tmp_path, scene_png):
    args = ["--click", "10,10", "--path", "10,10", "--out", str(tmp_path / "v.mp4")]
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    code, text = _run(["--image", str(notes), "--workdir", str(drag_workdir), *args])
    assert code == 2 and "is not an image (it looks like text)" in text
    code, text = _run(["--image", str(tmp_path / "missing.jpg"), "--workdir", str(drag_workdir), *args])
    assert code == 2 and "does not exist" in text
    image = str(_image(tmp_path, scene_png))
    code, text = _run(["--image", image, "--workdir", str(empty_workdir), *args])
    assert code == 2 and "no trained checkpoint yet: train one first" in text and "--checkpoint" in text
    code, text = _run(["--image", image, "--workdir", str(tmp_path / "nowhere"), *args])
    assert code == 2 and "does not exist" in text and not (tmp_path / "nowhere").exists()
    code, text = _run(["--image", image, "--workdir", str(drag_workdir), "--checkpoint", "ck-9", *args])
    assert code == 2 and "'ck-9' is not in" in text and "tiny-000" in text
    code, text = _run(["--image", image, "--workdir", str(drag_workdir), "--click", "10,10", "--path", "1,1", "--out", str(tmp_path / "v.gif")])
    assert code == 2 and "must end in .mp4" in text
    code, text = _run(["--image", image, "--workdir", str(drag_workdir), "--set", "drag.sam_checkpoint=/nope/sam.pth", *args])
    assert code == 2 and "SAM checkpoint not found at '/nope/sam.pth'" in text
    code, text = _run(["--image", image, "--workdir", str(drag_workdir), "--set", "drag.max_entities=0", *args])
    assert code == 2 and "drag.max_entities" in text


def test_a_non_empty_save_case_folder_is_refused_before_generating(drag_workdir, tmp_path, scene_png):
    taken = tmp_path / "case"
    taken.mkdir()
    (taken / "demo.jpg").write_bytes(b"someone else's case")
    out = tmp_path / "video.mp4"
    code, text = _run(["--image", str(_image(tmp_path, scene_png)), "--click", "170,120", "--path", "170,120 230,100",
                       "--workdir", str(drag_workdir), "--out", str(out), "--steps", "2", "--save-case", str(taken)])
    assert code == 2 and "--save-case" in text and "not empty" in text and "nothing was generated" in text
    assert not out.exists() and "denoising" not in text
    assert (taken / "demo.jpg").read_bytes() == b"someone else's case"
