"""tasks.drag without a model: image validation, points, entities, checkpoints, cases, the model's view."""

from __future__ import annotations

import datetime as dt
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from model.segmentation import GrabCutSegmenter, Segmentation
from tasks import drag as dg
from tasks.user_study import read_user_study_case


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


class FixedSegmenter:
    """A segmenter that returns a given mask (to test what happens around segmentation)."""

    name = "fixed"

    def __init__(self, mask):
        self.mask = mask

    def segment(self, image, positive, negative=()):
        return Segmentation(self.mask.copy(), 1.0, [self.mask], self.name)


def _disc(hw=(120, 160), centre=(60, 50), r=20):
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= r * r


# ------------------------------------------------------------------ the image
@pytest.mark.parametrize(
    "data, says",
    [
        (b"", "is empty"),
        (b"x,y\n1,2\n", "is not an image (it looks like text)"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "is not an image (it looks like a PDF document)"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00", "is not an image (it looks like an MP4/MOV video)"),
    ],
)
def test_non_images_are_refused_with_what_they_look_like(data, says):
    with pytest.raises(dg.DragError, match="choose") as err:
        dg.load_image(data, 1024, name="'notes.png'")
    assert says in str(err.value) and "'notes.png'" in str(err.value)


def test_truncated_and_tiny_images(scene_png):
    with pytest.raises(dg.DragError, match="damaged or truncated"):
        dg.load_image(scene_png[: len(scene_png) // 3], 1024)
    with pytest.raises(dg.DragError, match="at least 16 pixels"):
        dg.load_image(_png(np.zeros((8, 40, 3), np.uint8)), 1024)


def test_missing_file(tmp_path):
    with pytest.raises(dg.DragError, match="does not exist"):
        dg.load_image(tmp_path / "nope.jpg", 1024)


def test_huge_image_is_downscaled_with_a_note_and_points_follow():
    big = np.zeros((1500, 3000, 3), np.uint8)
    big[700:800, 1400:1600] = 255
    work = dg.load_image(_png(big), 1024, name="'big.png'")
    assert work.hw == (512, 1024)
    assert any("downscaled to 1024x512" in n and "max_image_side = 1024" in n for n in work.notes)
    # a point in the file's pixels lands on the same content in the working image
    x, y = work.to_work([(1500, 750)])[0]
    assert work.image[int(round(y)), int(round(x))].min() == 255
    s = 1024 / 3000
    assert abs(x - (1500.5 * s - 0.5)) < 1e-6 and abs(y - (750.5 * s - 0.5)) < 1e-6


def test_crop_to_the_model_aspect_and_point_mapping():
    img = np.zeros((300, 600, 3), np.uint8)
    img[:, 300:] = 200  # right half bright
    work = dg.load_image(_png(img), 1024, aspect_hw=(64, 64), name="'wide.png'")
    assert work.hw == (300, 300) and work.crop == (150, 0, 300, 300)
    assert any("centre-cropped from 600x300 to 300x300" in n for n in work.notes)
    assert np.allclose(work.to_work([(450, 10)]), [(300, 10)])
    same = dg.load_image(_png(img), 1024, aspect_hw=(150, 300))
    assert same.hw == (300, 600) and not same.notes


def test_transparency_and_16_bit_are_converted_with_notes():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:20, :, 3] = 255  # top opaque red, bottom transparent
    work = dg.load_image(_png(rgba), 1024)
    assert tuple(work.image[5, 5]) == (255, 0, 0) and tuple(work.image[35, 5]) == (255, 255, 255)
    assert any("transparent" in n for n in work.notes)
    deep = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(deep).save(buf, format="PNG")
    work = dg.load_image(buf.getvalue(), 1024)
    assert work.image.dtype == np.uint8 and work.image.shape == (40, 40, 3) and any("8-bit" in n for n in work.notes)


# ------------------------------------------------------------------ points
def test_point_parsing_messages():
    assert dg.parse_point(" 12.5, 7 ") == (12.5, 7.0)
    assert dg.parse_points("1,2 3,4;5,6") == [(1, 2), (3, 4), (5, 6)]
    for bad in ("12", "a,b", "1,2,3", "nan,1"):
        with pytest.raises(dg.DragError, match="must be X,Y"):
            dg.parse_point(bad, "--click")
    with pytest.raises(dg.DragError, match="is empty"):
        dg.parse_points("  ", "--path #1")


# ------------------------------------------------------------------ entities
def test_path_starts_at_the_entity_centre_and_keeps_its_displacement():
    mask = _disc()
    image = np.zeros((120, 160, 3), np.uint8)
    case = dg.build_case(image, [dg.EntitySpec([(55, 45)], [], [(55, 45), (85, 45), (105, 75)])], FixedSegmenter(mask), 8)
    t = case.entities[0].trajectory
    assert np.allclose(t[0], (60, 50)) and np.allclose(t[-1] - t[0], (50, 30))
    drawn = dg.build_case(image, [dg.EntitySpec([(55, 45)], [], [(55, 45), (85, 45)])], FixedSegmenter(mask), 8, anchor=False)
    assert np.allclose(drawn.entities[0].trajectory, [(55, 45), (85, 45)])


def test_paths_outside_the_image_are_clipped_with_a_warning():
    case = dg.build_case(np.zeros((120, 160, 3), np.uint8), [dg.EntitySpec([(60, 50)], [], [(60, 50), (400, 50)])],
                         FixedSegmenter(_disc()), 8)
    assert case.entities[0].trajectory[:, 0].max() == 159
    assert any("entity 1 path: 1 of 2 point(s) lay outside the 160x120 image" in n for n in case.notes)
    # a camera pan drawn off the edge is a displacement: only the trajectory the model gets is clipped
    cam = dg.build_case(np.zeros((120, 160, 3), np.uint8), [dg.EntitySpec(camera=True, path=[(0, 0), (-30, 0)])], None, 8)
    assert np.allclose(cam.entities[0].trajectory[-1] - cam.entities[0].trajectory[0], (-30, 0)) and not cam.notes


def test_empty_mask_no_click_no_path_and_too_many_entities():
    image = np.zeros((120, 160, 3), np.uint8)
    empty = FixedSegmenter(np.zeros((120, 160), bool))
    with pytest.raises(dg.DragError, match=r"entity 1: the selection at \(10, 10\) gave an empty mask"):
        dg.build_case(image, [dg.EntitySpec([(10, 10)], [], [(10, 10)])], empty, 8)
    with pytest.raises(dg.DragError, match="entity 1 has no path"):
        dg.build_case(image, [dg.EntitySpec([(60, 50)])], FixedSegmenter(_disc()), 8)
    with pytest.raises(dg.DragError, match="entity 2: click on it at least once"):
        dg.build_case(image, [dg.EntitySpec([(60, 50)], [], [(1, 1)]), dg.EntitySpec([], [], [(1, 1)])], FixedSegmenter(_disc()), 8)
    with pytest.raises(dg.DragError, match="no entity selected"):
        dg.build_case(image, [], FixedSegmenter(_disc()), 8)
    specs = [dg.EntitySpec([(60, 50)], [], [(60, 50)]) for _ in range(3)]
    with pytest.raises(dg.DragError, match=r"3 entities selected, but at most 2 .*drag.max_entities.*remove 1"):
        dg.build_case(image, specs, FixedSegmenter(_disc()), 2)
    with pytest.raises(dg.DragError, match="more than once"):
        dg.build_case(image, [dg.EntitySpec(camera=True, path=[(1, 1)])] * 2, None, 8)


def test_grabcut_entity_and_camera_become_a_suite_item(scene_image):
    img, truth = scene_image
    case = dg.build_case(
        img, [dg.EntitySpec([(170, 120)], [], [(170, 120), (220, 100), (260, 140)]), dg.EntitySpec(camera=True, path=[(0, 0), (12, 0)])],
        GrabCutSegmenter(), 8,
    )
    obj, cam = case.entities
    assert ((obj.mask & truth).sum() / (obj.mask | truth).sum()) > 0.8 and obj.method == "grabcut"
    assert cam.mask.all() and cam.camera
    item = case.to_item(8)
    assert item.trajectories.shape == (2, 8, 2) and item.masks.shape == (2, 240, 320) and item.hw == (240, 320)
    assert np.allclose(item.trajectories[0, 0], obj.centre) and np.allclose(item.trajectories[0, -1], obj.trajectory[-1], atol=1e-3)
    assert item.radii[1] == pytest.approx(120, abs=1)  # the whole frame's incircle
    assert case.case_id() == dg.DragCase(img, case.entities).case_id() and len(case.case_id()) == 12


def test_model_view_matches_the_pipeline(scene_image):
    from model.maps import gaussian_maps
    from model.pipeline import DragAnythingPipeline

    img, truth = scene_image
    case = dg.build_case(img, [dg.EntitySpec([(170, 120)], [], [(170, 120), (250, 60)]), dg.EntitySpec(camera=True, path=[(0, 0), (20, 5)])],
                         FixedSegmenter(truth), 8)
    item = case.to_item(8)
    view = dg.model_view(case, 64, 96, 8, frame=5)
    # the pipeline's own preparation of the same item (the method does not use the pipeline's state)
    _, centers, radii, order = DragAnythingPipeline.prepare_entities(None, item.masks, list(item.trajectories), 8, 64, 96, item.radii)
    assert np.allclose(view.centers[:, order.numpy()], centers.numpy(), atol=1e-4)
    assert np.allclose(view.radii[order.numpy()], radii.numpy(), atol=1e-4)
    expected = gaussian_maps(centers[5:6], radii, 64, 96)[0, 0].numpy()
    assert np.allclose(view.gaussian, expected, atol=1e-6)
    # entity map: the small entity is painted over the camera's disc, in its own colour
    cx, cy = np.round(view.centers[5, 0]).astype(int)
    assert tuple(view.entity[cy, cx]) == dg.color(0)
    assert view.entity.shape == (64, 96, 3) and view.gaussian.max() == pytest.approx(1.0, abs=0.05)


def test_thin_entities_are_flagged_at_the_model_resolution():
    mask = np.zeros((240, 320), bool)
    mask[100:104, 20:300] = True  # 4 px tall: radius ~2 px, ~0.5 px at 64x64
    case = dg.build_case(np.zeros((240, 320, 3), np.uint8), [dg.EntitySpec([(100, 101)], [], [(100, 101)])], FixedSegmenter(mask), 8)
    assert any("entity 1 is very thin at the model's 64x64" in n for n in case.model_notes(64, 64))
    assert not dg.build_case(np.zeros((240, 320, 3), np.uint8), [dg.EntitySpec([(60, 50)], [], [(60, 50)])],
                             FixedSegmenter(_disc((240, 320))), 8).model_notes(64, 64)


def test_overlay_draws_masks_clicks_and_paths(scene_image):
    img, truth = scene_image
    case = dg.build_case(img, [dg.EntitySpec([(170, 120)], [], [(170, 120), (250, 60)])], FixedSegmenter(truth), 8)
    ov = dg.render_overlay(img, [dg.Overlay(truth, [(170, 120)], [(20, 20)], [(170, 120), (250, 60)], case.entities[0].trajectory, active=True)], width=640)
    assert ov.shape == (480, 640, 3) and ov.dtype == np.uint8
    inside = cv2.resize(truth.astype(np.uint8), (640, 480), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert not np.array_equal(ov[inside], cv2.resize(img, (640, 480), interpolation=cv2.INTER_CUBIC)[inside])  # tinted
    assert dg.render_overlay(img, []).shape == img.shape


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_choice(empty_workdir, make_checkpoint):
    from core.tables import Workdir

    wd = Workdir(str(empty_workdir))
    with pytest.raises(dg.DragError, match=r"no trained checkpoint yet: train one first .*or pass --checkpoint ID"):
        dg.choose_checkpoint(wd)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    make_checkpoint(empty_workdir, "old", step=100, created_at=t0)
    make_checkpoint(empty_workdir, "new", step=200, created_at=t0 + dt.timedelta(hours=1))
    make_checkpoint(empty_workdir, "gone", step=300, created_at=t0 + dt.timedelta(hours=2), weights=False)
    assert dg.choose_checkpoint(wd)["checkpoint_id"] == "new"  # the newest whose weights exist
    assert dg.choose_checkpoint(wd, "old")["checkpoint_id"] == "old"
    assert [r["checkpoint_id"] for r in dg.trained_checkpoints(wd)] == ["new", "old"]
    assert dg.checkpoint_hw_frames(dg.choose_checkpoint(wd)) == (64, 64, 8)
    with pytest.raises(dg.DragError, match=r"'gone' has no controller weights at .*checkpoints/gone/controlnet"):
        dg.choose_checkpoint(wd, "gone")
    with pytest.raises(dg.DragError, match=r"'nope' is not in .*\(trained: new, old\)"):
        dg.choose_checkpoint(wd, "nope")
    with pytest.raises(dg.DragError, match="model-free reference generator"):
        dg.choose_checkpoint(wd, "warp")


# ------------------------------------------------------------------ cases
def test_saved_case_round_trips_through_the_user_study_reader(tmp_path, scene_image):
    img, truth = scene_image
    case = dg.build_case(
        img, [dg.EntitySpec([(170, 120)], [], [(170, 120), (220, 100), (270, 150)]), dg.EntitySpec(camera=True, path=[(0, 0), (10, 4)])],
        FixedSegmenter(truth), 8,
    )
    folder = dg.save_case(tmp_path / "cases" / "cat", case)
    assert sorted(p.name for p in folder.iterdir()) == ["demo.jpg", "demo.json", "mask_1.jpg", "mask_2.jpg"]
    item = read_user_study_case(folder, resolution=(240, 320), frames=14)
    assert item.item_id == "cat" and item.masks.shape == (2, 240, 320) and not item.notes
    for got, want in zip(item.masks, case.masks):
        assert (got & want).sum() / (got | want).sum() > 0.99
    from model.maps import interpolate_path

    for got, ent in zip(item.trajectories, case.entities):
        assert np.allclose(got, interpolate_path(ent.trajectory, 14), atol=0.02)
    assert np.abs(item.image.astype(int) - img.astype(int)).mean() < 3  # JPEG
    with pytest.raises(dg.DragError, match="already exists"):
        dg.save_case(folder, case)
    data = dg.case_zip(case, "cat")
    import zipfile

    assert sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) == ["cat/demo.jpg", "cat/demo.json", "cat/mask_1.jpg", "cat/mask_2.jpg"]
    for bad in ("", "../x", "a b", "-x"):
        with pytest.raises(dg.DragError, match="case name"):
            dg.check_case_name(bad)


def test_video_paths_come_from_the_digest_only():
    p = dg.video_relpath("abc123", "../../etc/passwd", 3, 25)
    assert p.startswith("drag/abc123/") and "/.." not in p and p.endswith("-seed3-steps25.mp4") and p.count("/") == 2
    a = dg.video_relpath("abc123", "ck", 0, 25, {"fps": 7})
    assert a != dg.video_relpath("abc123", "ck", 0, 25, {"fps": 8}) and a == dg.video_relpath("abc123", "ck", 0, 25, {"fps": 7})
