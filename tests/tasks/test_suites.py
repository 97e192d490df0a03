
import numpy as np

from core.config import load_config
from core.suites import SUITES
from core.tables import Workdir
from tasks.labels import VideoRef, label_videos
from tasks.suites import labels_items
from tasks.user_study import folder_items, read_user_study_case, write_user_study_case


def test_sample_suite_items_from_labels(sample_root, tmp_path):
    wd = Workdir(tmp_path)
    cfg = load_config("tiny", {"labels.frames.count": 16}).labels  # longer than the protocol's 14 frames
    rows, _ = label_videos(str(sample_root), [VideoRef("sample", "val", v) for v in ("sample_0003", "sample_0007")], cfg, {}, str(tmp_path))
    wd.append("labels", rows)
    items = labels_items(wd, SUITES["sample"])
    assert [i.item_id for i in items] == ["sample_0003", "sample_0007"]
    it = items[0]
    E = len(it.entity_ids)
    assert it.image.shape == (256, 256, 3) and it.masks.shape == (E, 256, 256)
    assert it.trajectories.shape == (E, 14, 2) and it.visible.shape == (E, 14)
    assert it.orig_hw == (240, 320)
    # The first trajectory point lies inside the entity's first-frame mask.
    for m, t in zip(it.masks, it.trajectories):
        assert m[int(round(t[0, 1])), int(round(t[0, 0]))]


def test_user_study_case_resized_cropped_and_interpolated(sample_root):
    item = read_user_study_case(sample_root / "user_study" / "sample_0003", (128, 224), 14)
    assert item.image.shape == (128, 224, 3) and item.trajectories.shape[1:] == (14, 2)
    for m, t in zip(item.masks, item.trajectories):
        assert m[int(round(t[0, 1])), int(round(t[0, 0]))], "path start must stay on the entity after the crop"


def _odd_case(folder, size=(301, 517)):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
    mask = np.zeros(size, bool)
    mask[100:180, 200:300] = True
    write_user_study_case(folder, img, [mask], [np.array([[250, 140], [400, 150], [560, 160]])])  # last point outside
    return folder


def test_user_study_odd_size_jpeg_mask_and_outside_points(tmp_path):
    case = _odd_case(tmp_path / "case1")
    item = read_user_study_case(case, (256, 256), 14)
    assert item.image.shape == (256, 256, 3)
    assert any("fell outside the frame and were clipped" in n for n in item.notes)
    assert item.trajectories[..., 0].max() <= 255 and item.trajectories.min() >= 0
    # JPEG noise around the mask edge does not leak into the mask: it stays one solid block.
    frac = item.masks[0].sum() / ((180 - 100) * (300 - 200) * (256 / 301) ** 2)
    assert 0.9 < frac < 1.1


def test_user_study_missing_mask_is_reported_and_others_load(tmp_path):
    _odd_case(tmp_path / "good")
    bad = _odd_case(tmp_path / "bad")
    (bad / "mask_1.jpg").unlink()
    items, rejects = folder_items(tmp_path, (256, 256), 14)
    assert [i.item_id for i in items] == ["good"]
    assert rejects[0][0] == "bad" and "mask file" in rejects[0][1] and "missing" in rejects[0][1]


def test_user_study_bad_json(tmp_path):
    case = _odd_case(tmp_path / "c")
    (case / "demo.json").write_text("{not json")
    items, rejects = folder_items(tmp_path, (256, 256), 14)
    assert not items and "not valid JSON" in rejects[0][1]


def test_official_items_hold_every_first_mask_id_void_and_a_3_pixel_entity(sample_root, tmp_path):
    from core.media import load_cached_clip, write_npz
    from eval.protocol import OFFICIAL, PROJECT

    wd = Workdir(tmp_path)
    cfg = load_config("tiny").labels
    rows, _ = label_videos(str(sample_root), [VideoRef("sample", "val", "sample_0003")], cfg, {}, str(tmp_path))
    wd.append("labels", rows)
    rel = rows[0]["frames_path"]
    frames, ids = load_cached_clip(wd, rel)
    ids = ids.copy()
    ids[:, 200:210, 10:20] = 0  # a void patch (the labels drop void)
    ids[0, 100, 100:103] = 4242  # a 3-pixel entity in the first mask (under labels.min_area_px = 4)
    write_npz(wd, rel, frames=frames, ids=ids)
    official = labels_items(wd, SUITES["sample"], protocol=OFFICIAL)[0]
    project = labels_items(wd, SUITES["sample"], protocol=PROJECT)[0]
    labelled = sorted(int(r["entity_id"]) for r in rows)
    assert 0 not in labelled and 4242 not in labelled
    assert set(official.entity_ids) == set(labelled) | {0, 4242}
    assert set(project.entity_ids) == set(labelled)
    k = official.entity_ids.index(4242)
    assert official.masks[k].sum() == 3 and np.isfinite(official.trajectories[k]).all()
    assert official.trajectories.shape[1] == project.trajectories.shape[1]  # tracked on the whole clip, cut to the suite's length
    assert "every first-mask id" in official.ground_truth
