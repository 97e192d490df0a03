"""The user-study reader keeps the official timing and every official case, and refuses bad input with a sentence."""

import json

import numpy as np
import pytest

from core.rejects import ItemError
from tasks.user_study import folder_items, read_user_study_case, write_user_study_case


def _case(folder, masks, paths, size=(320, 576)):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
    write_user_study_case(folder, img, masks, paths)
    return folder


def _box(size, y0, y1, x0, x1):
    m = np.zeros(size, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_a_path_with_more_points_than_frames_keeps_its_first_points_as_the_official_demo():
    # A car path of 26 points drawn at 1 point per frame: frame k is point k, never resampled.
    import tempfile
    from pathlib import Path

    size = (320, 576)
    path = np.stack([200 + 12.0 * np.arange(26) ** 1.3 / 26 ** 0.3, np.full(26, 160.0)], 1)
    with tempfile.TemporaryDirectory() as tmp:
        case = _case(Path(tmp) / "car", [_box(size, 140, 180, 180, 230)], [path], size)
        item = read_user_study_case(case, (320, 576), 14)
    np.testing.assert_allclose(item.trajectories[0], path[:14], atol=0.01)  # same size: no rescale
    assert any("first 14 are the 14 frames" in n for n in item.notes)


def test_a_sparse_path_is_interpolated(tmp_path):
    size = (320, 576)
    case = _case(tmp_path / "c", [_box(size, 140, 180, 180, 230)], [np.array([[200.0, 160.0], [330.0, 160.0]])], size)
    item = read_user_study_case(case, (320, 576), 14)
    np.testing.assert_allclose(np.diff(item.trajectories[0][:, 0]), 10.0, atol=0.01)


def test_masks_outside_the_centre_crop_keep_the_case(tmp_path):
    # Landscape 320 x 576 to a 256 x 256 suite: the centre crop keeps x in [144, 432); these
    # masks lie at the left edge. The old reader said "draw a larger mask"; they are not small.
    size = (320, 576)
    masks = [_box(size, 100, 200, 10, 90), _box(size, 50, 120, 100, 180)]
    paths = [np.array([[50.0, 150.0], [80.0, 150.0]]), np.array([[140.0, 85.0], [160.0, 90.0]])]
    case = _case(tmp_path / "edge", masks, paths, size)
    item = read_user_study_case(case, (256, 256), 14, fit="masks")
    assert item.masks.shape == (2, 256, 256)
    for m, t in zip(item.masks, item.trajectories):
        assert m[int(round(t[0, 1])), int(round(t[0, 0]))], "each path starts on its entity"
    assert any("crop moved to hold every mask" in n for n in item.notes)
    padded = read_user_study_case(case, (256, 256), 14, fit="pad")
    assert any("letterboxed" in n for n in padded.notes) and padded.image[:20].max() == 0  # bars above the picture
    with pytest.raises(ItemError, match="outside the 256x256 centre crop; set evaluate.user_study_fit=masks"):
        read_user_study_case(case, (256, 256), 14, fit="center")


def test_masks_wider_than_one_crop_are_letterboxed(tmp_path):
    size = (320, 576)
    masks = [_box(size, 100, 200, 10, 60), _box(size, 100, 200, 500, 560)]
    case = _case(tmp_path / "wide", masks, [np.array([[30.0, 150.0]]), np.array([[530.0, 150.0]])], size)
    item = read_user_study_case(case, (256, 256), 14)
    assert all(m.any() for m in item.masks) and any("masks span more than one crop" in n for n in item.notes)


def test_clipped_points_are_counted_in_the_notes(tmp_path):
    size = (320, 576)
    case = _case(tmp_path / "out", [_box(size, 140, 180, 300, 340)], [np.array([[320.0, 160.0], [620.0, 160.0]])], size)
    item = read_user_study_case(case, (256, 256), 14)
    note = [n for n in item.notes if "clipped" in n]
    assert note and note[0].startswith("entity 1: ") and " of 14 trajectory points" in note[0]
    assert item.trajectories[..., 0].max() <= 255


def _meta(case):
    return json.loads((case / "demo.json").read_text())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["1"].update(trajectory=[[10, 10], [float("nan"), 5]]), "not a finite number"),
        (lambda m: m["1"].update(trajectory="left"), "list of \\[x, y\\] number pairs"),
        (lambda m: m.update({"01": dict(m["1"])}), "name the same entity id 1"),
        (lambda m: m["1"].update(mask_name="/etc/passwd"), "is not relative"),
        (lambda m: m["1"].update(mask_name="../other/mask_1.jpg"), "leaves its folder"),
        (lambda m: m.update({"1": ["not", "an", "object"]}), "expected \\{'mask_name'"),
    ],
)
def test_bad_entries_are_refused_with_a_sentence(tmp_path, edit, message):
    size = (120, 160)
    case = _case(tmp_path / "bad", [_box(size, 40, 80, 40, 80)], [np.array([[60.0, 60.0], [70, 60]])], size)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mask_1.jpg").write_bytes((case / "mask_1.jpg").read_bytes())
    meta = _meta(case)
    edit(meta)
    (case / "demo.json").write_text(json.dumps(meta).replace("NaN", "NaN"))
    with pytest.raises(ItemError, match=message):
        read_user_study_case(case, (64, 64), 8)


def test_non_digit_keys_get_their_own_ids(tmp_path):
    size = (120, 160)
    case = _case(tmp_path / "keys", [_box(size, 10, 50, 10, 50), _box(size, 60, 100, 90, 140)], [np.array([[30.0, 30.0]]), np.array([[110.0, 80.0]])], size)
    meta = _meta(case)
    meta = {"car": meta["1"], "dog": meta["2"], "3": meta["1"]}
    (case / "demo.json").write_text(json.dumps(meta))
    item = read_user_study_case(case, (64, 64), 8)
    assert sorted(item.entity_ids) == [3, 4, 5] and len(item.masks) == 3


def test_one_malformed_case_is_a_reject_and_the_others_load(tmp_path):
    size = (120, 160)
    good = _case(tmp_path / "good", [_box(size, 40, 80, 40, 80)], [np.array([[60.0, 60.0]])], size)
    weird = _case(tmp_path / "weird", [_box(size, 40, 80, 40, 80)], [np.array([[60.0, 60.0]])], size)
    (weird / "mask_1.jpg").unlink()
    (weird / "mask_1.jpg").mkdir()  # a folder where the mask should be: not a file
    listy = _case(tmp_path / "listy", [_box(size, 40, 80, 40, 80)], [np.array([[60.0, 60.0]])], size)
    (listy / "demo.json").write_text("[1, 2, 3]")
    items, bad = folder_items(tmp_path, (64, 64), 8)
    assert [i.item_id for i in items] == [good.name]
    reasons = dict(bad)
    assert set(reasons) == {"weird", "listy"}
    assert "mask file" in reasons["weird"] and "lists no entity" in reasons["listy"]
