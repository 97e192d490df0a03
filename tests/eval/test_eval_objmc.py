"""ObjMC: hand-computed values, the rules for unequal lengths and invisible frames, official JSON."""

import json
import math

import cv2
import numpy as np
import pytest

from eval.bootstrap import bootstrap_ratio
from eval.objmc import (
    entity_errors,
    format_report,
    grid_points,
    score,
    score_video,
    track_entities,
)
from tasks.evaluate import (
    read_trajectory_dir,
    score_dirs,
    write_trajectory_dir,
)

# Two videos. v1/a: pred one frame longer (common prefix: 3 frames), errors 0, 5, 0.
# v1/b: pred one frame shorter (prefix: 2 frames), gt invisible on frame 1 -> only frame 0 counts (error 0).
# v2/c: errors 1, 2.
GT = {
    "v1": {"a": [[0, 0], [3, 4], [6, 8]], "b": [[10, 10], [10, 10], [10, 10]]},
    "v2": {"c": [[0, 0], [0, 0]]},
}
VIS = {"v1": {"b": [True, False, True]}}
PRED = {
    "v1": {"a": [[0, 0], [0, 0], [6, 8], [9, 9]], "b": [[10, 10], [20, 10]]},
    "v2": {"c": [[1, 0], [0, 2]]},
}


def test_hand_computed_flat_mean():
    r = score(PRED, GT, VIS)
    # flat mean over counted (video, entity, frame) triples: (0+5+0 + 0 + 1+2) / 6
    assert r.value == pytest.approx(8 / 6)
    assert r.n_pairs == 6
    ents = {(i.item_id, e.entity_id): e for i in r.items for e in i.entities}
    assert ents["v1", "a"].error_px == pytest.approx(5 / 3)
    assert ents["v1", "a"].unmatched == 1
    assert ents["v1", "b"].error_px == 0.0 and ents["v1", "b"].n == 1
    assert np.isnan(ents["v1", "b"].per_frame[1])  # invisible frame: NaN, not counted
    assert len(ents["v1", "b"].per_frame) == 2 and ents["v1", "b"].unmatched == 1
    assert ents["v2", "c"].error_px == pytest.approx(1.5)
    # ... which is not the mean of per-entity means:
    assert r.value != pytest.approx(np.mean([5 / 3, 0.0, 1.5]))
    num, den = r.sufficient()
    assert num.tolist() == pytest.approx([5.0, 3.0]) and den.tolist() == [4, 2]
    ci = bootstrap_ratio(num, den, n_boot=200, seed=0)
    assert ci.value == pytest.approx(r.value)


def test_nonfinite_gt_is_invisible_and_null_pred_is_reported():
    e = entity_errors([[0, 0], [1, 1], [np.nan, np.nan]], [[0, 0], [None, None], [2, 2]])
    # frame 1: gt null -> excluded; frame 2: prediction missing -> excluded and reported
    assert e.n == 1 and e.pred_missing == 1
    r = score({"v": {"1": [[0, 0], [np.nan, np.nan]]}}, {"v": {"1": [[0, 0], [3, 4]]}})
    assert "null predicted points" in format_report(r)


def test_scaling_to_eval_resolution():
    # gt at 100 x 100, prediction at 50 x 50, errors measured at 200 (H) x 400 (W).
    gt = [[10.0, 20.0], [30.0, 40.0]]
    pred_at_50 = [[(10 + 0.5) / 2 - 0.5, (20 + 0.5) / 2 - 0.5], [(31 + 0.5) / 2 - 0.5, (40 + 0.5) / 2 - 0.5]]
    e = entity_errors(pred_at_50, gt, pred_hw=(50, 50), gt_hw=(100, 100), eval_hw=(200, 400))
    # frame 0 identical; frame 1 off by 1 px in x at 100 px width -> 4 px at 400 px width
    np.testing.assert_allclose(e.per_frame, [0.0, 4.0], atol=1e-9)


def test_missing_video_and_entity_are_reported():
    pred = {"v1": {"a": PRED["v1"]["a"]}, "v9": {"z": [[0, 0]]}}  # v2 missing, v1/b missing, v9 unknown
    r = score(pred, GT, VIS)
    assert r.missing_items == ["v2"]
    assert r.missing_entities == [("v1", "b")]
    assert r.extra_items == ["v9"]
    assert r.value == pytest.approx(5 / 3)
    text = format_report(r)
    assert "v2" in text and "v1/b" in text and "v9" in text
    assert r.summary()["missing_items"] == ["v2"]


def test_json_round_trip_and_score_dirs(tmp_path):
    write_trajectory_dir(tmp_path / "gt", GT, VIS)
    write_trajectory_dir(tmp_path / "pred", {"v1": PRED["v1"]})  # v2 not predicted
    raw = json.loads((tmp_path / "gt" / "v1.json").read_text())
    assert raw["b"][1] is None and raw["a"] == [[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]
    trajs, vis = read_trajectory_dir(tmp_path / "gt")
    assert set(trajs) == {"v1", "v2"}
    np.testing.assert_array_equal(trajs["v1"]["a"], np.array(GT["v1"]["a"], float))
    assert vis["v1"]["b"].tolist() == [True, False, True]
    r = score_dirs(tmp_path / "gt", tmp_path / "pred")
    assert r.missing_items == ["v2"]
    assert r.value == pytest.approx(5 / 4)  # v1 only: (0 + 5 + 0 + 0) / 4
    # Full prediction: same as scoring the dicts.
    write_trajectory_dir(tmp_path / "pred", PRED)
    assert score_dirs(tmp_path / "gt", tmp_path / "pred").value == pytest.approx(8 / 6)


def test_reads_official_files(tmp_path):
    # Exactly what the official scripts write: integer ids as keys, integer pixel coordinates.
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt" / "abc123.json").write_text(json.dumps({"0": [[5, 5], [6, 5]], "6101": [[40, 41], [42, 43]]}))
    (tmp_path / "pred" / "abc123.json").write_text(json.dumps({"0": [[5, 5], [6, 8]], "6101": [[40, 41], [42, 43]]}))
    r = score_dirs(tmp_path / "gt", tmp_path / "pred")
    assert r.value == pytest.approx(3 / 4)
    with pytest.raises(FileNotFoundError):
        score_dirs(tmp_path / "nope", tmp_path / "pred")


def _moving_texture(T: int = 8, size: int = 96, step=(2.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.uniform(0, 255, (size * 2, size * 2, 3)).astype(np.float32), (0, 0), 2.0)
    big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    frames, shift = [], []
    for t in range(T):
        dx, dy = step[0] * t, step[1] * t
        M = np.float32([[1, 0, dx], [0, 1, dy]])
        frames.append(cv2.warpAffine(big, M, (size, size), flags=cv2.INTER_LINEAR))
        shift.append((dx, dy))
    return np.stack(frames), np.array(shift)


def test_track_entities_follows_translation():
    frames, shift = _moving_texture()
    c0 = np.array([[40.0, 50.0], [60.0, 60.0]])
    tracks, valid = track_entities(frames, c0)
    truth = c0[:, None, :] + shift[None]
    assert np.abs(tracks - truth).max() < 0.3
    assert valid.all()
    # Official rule: grid only, the track starting at the grid point nearest the centre.
    tracks_g, _ = track_entities(frames, c0, add_centers=False, grid_size=10)
    grid = grid_points(96, 96, 10)
    nearest = grid[np.linalg.norm(grid[None] - c0[:, None], axis=2).argmin(axis=1)]
    np.testing.assert_allclose(tracks_g[:, 0], nearest, atol=1e-5)


def test_score_video_moving_vs_static():
    frames, shift = _moving_texture()
    c0 = np.array([[48.0, 48.0]])
    gt = c0[:, None, :] + shift[None]
    item, pred = score_video("x", frames, gt, entity_ids=[7])
    assert item.error_px < 0.3 and set(pred) == {"7"}
    static = np.repeat(frames[:1], len(frames), axis=0)
    item_s, _ = score_video("x", static, gt, entity_ids=[7])
    expected = np.mean([math.hypot(*s) for s in shift])
    assert item_s.error_px == pytest.approx(expected, abs=0.05)


def test_a_video_smaller_than_the_ground_truth_is_tracked_at_its_size_and_scored_at_the_ground_truths():
    frames, shift = _moving_texture()  # 96x96
    c0 = np.array([[48.0, 48.0]])
    gt = c0[:, None, :] + shift[None]
    half = np.stack([cv2.resize(f, (48, 48), interpolation=cv2.INTER_AREA) for f in frames])
    item, pred = score_video("x", half, gt, entity_ids=[7], gt_hw=(96, 96))
    # the track lives at the video's size (half the ground truth's coordinates, pixel centres aligned)
    np.testing.assert_allclose(pred["7"][0], (c0[0] + 0.5) / 2 - 0.5, atol=1e-4)
    assert item.error_px < 0.6
    static = np.repeat(half[:1], len(half), axis=0)
    assert score_video("x", static, gt, entity_ids=[7], gt_hw=(96, 96))[0].error_px > 5 * item.error_px
