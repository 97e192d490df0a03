"""The Drag page in AppTest: upload -> click -> path -> generate (a Ray task) -> video; and its messages.

Clicks on the image come from a browser component that AppTest cannot drive, so the
clicks here are typed into the page's "type points" field, which feeds the same code
(the browser test clicks on the real image).
"""

from __future__ import annotations

import numpy as np
import pytest

ADD = "FormSubmitter:drag_typed-Add points"


def _ok(at):
    assert not at.exception, [e.message for e in at.exception]
    return at


def _upload(at, data: bytes, name: str = "scene.png", mime: str = "image/png"):
    at.file_uploader(key="drag_upload").upload(name, data, mime)
    return _ok(at.run())


def _image_captions(at) -> str:
    return "\n".join(c for img in at.get("image") for c in img.captions)


def _type(at, text: str):
    at.text_input(key="drag_points").input(text)
    at.button(key=ADD).click()
    return _ok(at.run())


def test_upload_click_path_generate_play_and_save(drag_page, drag_workdir, scene_png, page_text, ray_cleanup):
    import av

    from tasks.user_study import read_user_study_case

    at = drag_page(drag_workdir)
    assert "Upload an image" in page_text(at) and "GrabCut" in page_text(at)
    assert at.selectbox(key="drag_checkpoint").value == "tiny-000"

    _upload(at, scene_png)
    assert at.button(key="drag_generate").disabled  # nothing selected yet
    assert "centre-cropped from 320x240 to 240x240" in page_text(at)  # the tiny model is 64x64
    _type(at, "130,120")  # the cat (the scene's (170, 120) after the crop)
    assert at.radio(key="drag_mode").value == "path"  # the first click on an entity leads to its path
    assert "path: 1 point(s) (stays still" in page_text(at)  # the grab point starts the path
    _type(at, "175,100 215,140")
    shown = _image_captions(at)
    assert "2D Gaussian map" in shown and "Entity map" in shown and "Frame 0" in shown  # what the model sees
    assert not at.warning
    at.slider(key="drag_frame").set_value(7)
    _ok(at.run())

    at.number_input(key="drag_steps").set_value(2)
    assert not at.button(key="drag_generate").disabled
    at.button(key="drag_generate").click()
    _ok(at.run())
    assert not at.error, [e.value for e in at.error]
    videos = list((drag_workdir / "drag").rglob("*.mp4"))
    assert len(videos) == 1 and videos[0].name.startswith("tiny-000-seed0-steps2-")
    with av.open(str(videos[0])) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (240, 240, 3)
    assert len(at.get("video")) == 1 and len(at.get("download_button")) >= 2  # the video, its download, the case zip
    relpath = videos[0].relative_to(drag_workdir).as_posix()
    assert any(relpath in c.value for c in at.caption)

    # the same inputs again: served from the workdir, not generated twice
    at.button(key="drag_generate").click()
    _ok(at.run())
    assert any("generated earlier" in c.value for c in at.caption)

    at.button(key="drag_save").click()
    _ok(at.run())
    saved = [s.value for s in at.success]
    assert saved and "user-study" in saved[0]
    case = next((drag_workdir / "user-study").iterdir())
    item = read_user_study_case(case, resolution=(240, 240), frames=8)
    assert item.masks.shape == (1, 240, 240) and 0.05 < item.masks[0].mean() < 0.4
    assert np.allclose(item.trajectories[0, -1] - item.trajectories[0, 0], (85, 20), atol=0.5)
    at.button(key="drag_save").click()
    _ok(at.run())
    assert any("already exists" in e.value for e in at.error)


def test_page_messages_for_bad_input(drag_page, drag_workdir, scene_png, page_text, profile, monkeypatch):
    at = drag_page(drag_workdir, config=profile(executor="inline", max_entities=2, max_image_side=128))

    _upload(at, b"just some notes\n", name="notes.png")
    assert any("'notes.png' is not an image (it looks like text)" in e.value for e in at.error)

    _upload(at, scene_png, name="scene.png")
    text = page_text(at)
    assert "centre-cropped" in text and "downscaled to 128x128 (drag.max_image_side = 128)" in text

    _type(at, "70,64")
    _type(at, "400,64")  # the end is off the 128 px image
    assert any("entity 1 path: 1 of 2 point(s) lay outside the 128x128 image" in w.value for w in at.warning)

    at.button(key="drag_camera").click()  # entity 2: the whole image
    _ok(at.run())
    assert at.radio(key="drag_active").value == 1 and at.radio(key="drag_mode").value == "path"
    at.radio(key="drag_mode").set_value("select")
    _type(at, "10,10")
    assert any("whole image (camera motion)" in w.value for w in at.warning)
    at.radio(key="drag_mode").set_value("path")
    _type(at, "60,60 80,60")
    at.button(key="drag_new").click()  # a third entity is one too many here
    _ok(at.run())
    assert any("At most 2 entities" in e.value for e in at.error)

    _type(at, "1,2,3")
    assert any("must be X,Y" in e.value for e in at.error)

    # generation in the page's own process (drag.executor: inline)
    at.number_input(key="drag_steps").set_value(1)
    at.button(key="drag_generate").click()
    _ok(at.run())
    assert not at.error and len(at.get("video")) == 1
    assert list((drag_workdir / "drag").rglob("tiny-000-seed0-steps1-*.mp4"))

    # a selection that comes back empty (SAM can do that) is a warning, and blocks generation
    from model.segmentation import GrabCutSegmenter, Segmentation

    monkeypatch.setattr(GrabCutSegmenter, "segment", lambda self, image, positive, negative=(): Segmentation(
        np.zeros(image.shape[:2], bool), 0.0, [], "grabcut"))
    at.radio(key="drag_active").set_value(0)
    at.radio(key="drag_mode").set_value("select")
    _type(at, "30,30")
    assert any("entity 1: the selection at" in w.value and "gave an empty mask" in w.value for w in at.warning)
    assert at.button(key="drag_generate").disabled


def test_page_without_a_checkpoint_says_to_train_first(drag_page, empty_workdir, scene_png, page_text):
    at = drag_page(empty_workdir)
    _upload(at, scene_png)
    _type(at, "130,120")
    _type(at, "150,120")
    assert "no trained checkpoint yet" in page_text(at) and "draganything train" in page_text(at)
    assert at.button(key="drag_generate").disabled
    assert "2D Gaussian map" in _image_captions(at)  # the preview works without a checkpoint


def test_a_suite_items_first_frame_can_be_dragged(drag_page, drag_workdir, scene_image, page_text):
    from core.media import save_cached_clip
    from core.tables import Workdir

    img, truth = scene_image
    wd = Workdir(str(drag_workdir))
    frames = np.stack([img, img])
    save_cached_clip(wd, "frames/sample/val/v0.npz", frames, np.stack([truth.astype(np.int32)] * 2))
    rows = [dict(dataset="sample", split="val", video_id=v, entity_id=1, frames_path=f"frames/sample/val/{v}.npz") for v in ("v0", "v1")]
    wd.append("labels", rows)  # v1's clip is missing from the frames cache

    at = drag_page(drag_workdir)
    at.radio(key="drag_source").set_value("A suite item's first frame")
    _ok(at.run())
    assert at.selectbox(key="drag_item").value == "sample / val / v0"
    assert "centre-cropped from 320x240 to 240x240" in page_text(at)
    _type(at, "130,120")
    _type(at, "180,120")
    assert "2D Gaussian map" in _image_captions(at) and not at.button(key="drag_generate").disabled

    at.selectbox(key="drag_item").set_value("sample / val / v1")
    _ok(at.run())
    assert any("cannot be read" in e.value and "labels stage" in e.value for e in at.error)


@pytest.mark.slow
def test_page_with_sam_offers_its_three_masks(drag_page, drag_workdir, scene_png, page_text, profile, monkeypatch):
    """SAM (vit_b, random weights: no checkpoint file exists here) behind the page: says so, offers its masks."""
    import model.segmentation as segmentation

    monkeypatch.setattr(segmentation, "make_segmenter", lambda path, model_type="vit_b", device="cpu":
                        segmentation.SamSegmenter(None, model_type, random_weights=True))
    at = drag_page(drag_workdir, config=profile(sam_checkpoint="/models/sam/sam_vit_b_01ec64.pth", executor="inline"))
    assert "SAM vit_b" in page_text(at)
    _upload(at, scene_png)
    _type(at, "130,120")
    choice = at.selectbox(key=next(s.key for s in at.selectbox if s.key and s.key.startswith("drag_choice_")))
    assert choice.options == ["SAM's best", "small", "medium", "large"]
    choice.set_value(2)
    _ok(at.run())
    # random weights give some mask, maybe an empty one: either way the page explains, never raises
    text = page_text(at)
    assert "path: 1 point(s)" in text or "gave an empty mask" in text
