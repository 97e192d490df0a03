"""Evaluate scores each video against its frozen conditions, with the protocol it names; bad items are rejects."""

import numpy as np
import pandas as pd
import pytest

from core.checkpoints import reference_row
from core.config import load_config
from core.tables import Workdir
from eval.catalog import Identity
from tasks.evaluate import objmc_items
from tasks.generate import generate_items
from tasks.labels import VideoRef, label_videos

VAL = ["sample_0003", "sample_0007"]


def _world(sample_root, root, cfg):
    wd = Workdir(root)
    rows, _ = label_videos(str(sample_root), [VideoRef("sample", "val", v) for v in VAL], cfg.labels, {}, str(root))
    wd.append("labels", rows)
    samples, conditions, rejects = generate_items(str(root), reference_row("warp"), "sample", VAL, cfg)
    assert not rejects
    wd.append("conditions", conditions)
    wd.append("samples", samples)
    return wd


def test_official_protocol_end_to_end_on_the_sample_suite(sample_root, tmp_path):
    cfg = load_config("tiny", ["evaluate.protocol=official"])
    wd = _world(sample_root, tmp_path, cfg)
    cond = wd.read("conditions").iloc[0]
    assert cond["ground_truth"].startswith("official: real clip tracked at the original size") and "CoTracker grid 100" in cond["ground_truth"]
    # the ground truth was tracked at the original 240 x 320 and truncated to int there
    from core.geometry import scale_points

    traj = np.array([[list(p) for p in t] for t in cond["trajectories"]])
    at_eval = scale_points(traj, (int(cond["height"]), int(cond["width"])), (int(cond["eval_height"]), int(cond["eval_width"])))
    np.testing.assert_allclose(at_eval, np.round(at_eval), atol=1e-3)
    rows, rejects = objmc_items(wd.url, "warp", "sample", VAL, cfg)
    assert not rejects and rows
    labels = [Identity.read(r["identity"], "objmc").label for r in rows]
    assert all(x.startswith("official |") and "CoTracker grid 100" in x for x in labels)
    track = np.array(rows[0]["tracks"][0])
    assert np.array_equal(track, np.trunc(track)) and (rows[0]["video_height"], rows[0]["video_width"]) == (240, 320)


def test_videos_made_against_another_ground_truth_are_rejects_not_rescored(sample_root, tmp_path):
    wd = _world(sample_root, tmp_path, load_config("tiny"))  # generated with the project protocol
    rows, rejects = objmc_items(wd.url, "warp", "sample", VAL, load_config("tiny", ["evaluate.protocol=official"]))
    assert rows == [] and len(rejects) == 2
    assert "asked to follow ground truth made as 'project:" in rejects[0]["reason"] and "evaluate.protocol" in rejects[0]["reason"]


def test_a_damaged_video_is_a_reject_and_the_other_item_is_scored(sample_root, tmp_path):
    cfg = load_config("tiny")
    wd = _world(sample_root, tmp_path, cfg)
    s = wd.read("samples").set_index("item_id")
    with open(wd.path(s.loc[VAL[0], "video_path"].replace(".mp4", ".npz")), "wb") as f:
        f.write(b"not an npz")
    rows, rejects = objmc_items(wd.url, "warp", "sample", VAL, cfg)
    assert {r["item_id"] for r in rows} == {VAL[1]}
    assert [r["item"] for r in rejects] == [f"warp/sample/{VAL[0]}/objmc"] and rejects[0]["reason"].startswith("ValueError: ")
    assert "draganything evaluate" in rejects[0]["hint"] and rejects[0]["config_digest"]


def test_videos_without_conditions_are_a_reject_that_says_what_to_do(sample_root, tmp_path):
    cfg = load_config("tiny")
    wd = _world(sample_root, tmp_path, cfg)
    wd.delete("conditions", wd.keys("conditions"))
    rows, rejects = objmc_items(wd.url, "warp", "sample", VAL, cfg)
    assert rows == [] and "no conditions recorded" in rejects[0]["reason"] and "generate it again" in rejects[0]["reason"]


def test_compare_delta_is_on_the_flat_mean_not_on_per_item_means():
    from dashboard import data

    # item x: one entity; item y: three entities. The flat mean weighs y's frames 3x.
    def rows(cid, ex, ey):
        out = [dict(checkpoint_id=cid, item_id="x", entity_id=1, per_frame=[ex] * 4, identity="i")]
        out += [dict(checkpoint_id=cid, item_id="y", entity_id=k, per_frame=[ey] * 4, identity="i") for k in range(3)]
        return out

    objmc = pd.DataFrame(rows("a", 10.0, 2.0) + rows("b", 2.0, 4.0))
    t = pd.Timestamp("2026-01-01", tz="UTC")
    flat = {"a": (10 + 3 * 2) / 4, "b": (2 + 3 * 4) / 4}
    metrics = pd.DataFrame([dict(checkpoint_id=c, suite="s", metric="objmc", identity="i", value=v, ci_low=v, ci_high=v, n=2, created_at=t) for c, v in flat.items()])
    d = data.metric_deltas(metrics, "s", "a", "b", objmc).iloc[0]
    assert d["delta (B - A)"] == pytest.approx(flat["b"] - flat["a"])  # -0.5; per-item means would say (2 + 4) / 2 - (10 + 2) / 2 = -3
    assert "flat-mean difference over 2 shared items" in d["interval"]


def test_a_missing_video_file_is_a_reject_but_a_full_disk_stops_the_task(sample_root, tmp_path, monkeypatch):
    import errno
    import os

    import tasks.evaluate as ev

    cfg = load_config("tiny")
    wd = _world(sample_root, tmp_path, cfg)
    s = wd.read("samples").set_index("item_id")
    os.remove(wd.path(s.loc[VAL[0], "video_path"].replace(".mp4", ".npz")))  # an item's file, gone: that item's problem
    rows, rejects = objmc_items(wd.url, "warp", "sample", VAL, cfg)
    assert {r["item_id"] for r in rows} == {VAL[1]}
    assert [r["error"] for r in rejects] == ["FileNotFoundError"] and "draganything evaluate" in rejects[0]["hint"]

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ev, "read_frames", full_disk)  # the machine's problem: the task fails (and is retried)
    with pytest.raises(OSError, match="No space left"):
        objmc_items(wd.url, "warp", "sample", VAL[1:], cfg)


def test_a_tracker_setting_alone_changes_the_identity_of_the_number(sample_root, tmp_path):
    cfg = load_config("tiny")
    wd = _world(sample_root, tmp_path, cfg)
    base, _ = objmc_items(wd.url, "warp", "sample", VAL[:1], cfg)
    assert base and all("win 9" in r["identity"] for r in base)
    # the same videos under a wider LK window: another ground truth, so not scored as if it were the same number
    wider, rejects = objmc_items(wd.url, "warp", "sample", VAL[:1], load_config("tiny", ["evaluate.tracker.lk.win_size=15"]))
    assert wider == [] and len(rejects) == 1
    assert "win 15" in rejects[0]["reason"] and "win 9" in rejects[0]["reason"], rejects[0]["reason"]


def test_a_video_path_that_leaves_the_workdir_is_a_reject_and_is_not_opened(sample_root, tmp_path):
    cfg = load_config("tiny")
    wd = _world(sample_root, tmp_path / "wd", cfg)
    outside = tmp_path / "outside.npz"
    np.savez(outside, frames=np.zeros((8, 64, 64, 3), np.uint8))
    s = wd.read("samples")
    wd.delete("samples", wd.keys("samples"))
    s.loc[s["item_id"] == VAL[0], "video_path"] = "../outside.mp4"  # a planted table value
    wd.append("samples", s)
    rows, rejects = objmc_items(wd.url, "warp", "sample", VAL, cfg)
    assert {r["item_id"] for r in rows} == {VAL[1]}
    assert len(rejects) == 1 and "outside" in rejects[0]["reason"] and rejects[0]["error"] == "PathError"
