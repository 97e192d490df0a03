"""Reference generators, and the sanity check the whole metric rests on: warp << static on sample data."""

from pathlib import Path

import numpy as np
import pytest

from core.config import load_config
from core.sample_data import write_sample_dataset
from core.vipseg import load_categories, read_split
from eval.objmc import ObjMCResult, ground_truth_tracks, score_video
from eval.reference import masks_from_ids, static_video, warp_video
from tasks.labels import VideoRef, label_video


def _scene():
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), bool)
    mask[10:16, 8:14] = True
    frame = bg.copy()
    frame[mask] = (255, 0, 0)
    return frame, mask


def test_static_video():
    frame, _ = _scene()
    v = static_video(frame, 5)
    assert v.shape == (5, 40, 50, 3) and all(np.array_equal(f, frame) for f in v)
    with pytest.raises(ValueError):
        static_video(frame, 0)


def test_warp_moves_cutout_and_fills_hole():
    frame, mask = _scene()
    traj = np.array([[[10.5, 12.5], [13.5, 12.5], [20.5, 22.5]]])  # integer displacements (3, 0), (10, 10)
    v = warp_video(frame, mask[None], traj)
    assert v.shape == (3, 40, 50, 3)
    np.testing.assert_array_equal(v[0][mask], frame[mask])  # frame 0: the entity where it was
    moved = np.roll(np.roll(mask, 10, axis=0), 10, axis=1)
    assert (v[2][moved] == (255, 0, 0)).all()
    hole = mask & ~moved
    assert not (v[2][hole] == (255, 0, 0)).all(axis=1).any()  # inpainted, not the entity's colour
    # fill="none" leaves the first frame under the hole; pixels far from the entity are untouched.
    keep = warp_video(frame, mask[None], traj, fill="none")
    np.testing.assert_array_equal(keep[2][hole], frame[hole])
    np.testing.assert_array_equal(v[2][30:, 30:], frame[30:, 30:])
    # An entity whose trajectory point is not finite is hidden in that frame.
    gone = traj.copy()
    gone[0, 1] = np.nan
    assert not (warp_video(frame, mask[None], gone)[1] == (255, 0, 0)).all(axis=2).any()
    with pytest.raises(ValueError):
        warp_video(frame, mask[None], traj[:, :, :1])


@pytest.fixture(scope="module")
def sample_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    write_sample_dataset(root, n_videos=4)
    cfg = load_config("tiny").labels
    cats = load_categories(root)
    clips = []
    for split in ("val", "train"):
        for vid in read_split(root, split):
            rows, frames, ids = label_video(Path(root), VideoRef("sample", split, vid), cfg, cats)
            clips.append((vid, rows, frames, ids))
    return clips


def _warp_vs_static(clips, gt_from: str) -> tuple[float, float]:
    results: dict[str, list] = {"static": [], "warp": []}
    for vid, rows, frames, ids in clips:
        eids = [r["entity_id"] for r in rows]
        visible = np.array([r["visible"] for r in rows])
        labels = np.array([r["centers"] for r in rows], np.float64)  # (E, T, 2) at label resolution
        gt = labels if gt_from == "labels" else ground_truth_tracks(frames, labels[:, 0])
        masks = masks_from_ids(ids[0], eids)
        orig = (rows[0]["orig_height"], rows[0]["orig_width"])
        videos = {"static": static_video(frames[0], len(frames)), "warp": warp_video(frames[0], masks, gt)}
        for name, video in videos.items():
            item, _ = score_video(vid, video, gt, eids, visible, gt_hw=frames.shape[1:3], eval_hw=orig)
            results[name].append(item)
    return ObjMCResult(results["warp"]).value, ObjMCResult(results["static"]).value


def test_warp_far_below_static_on_tracked_ground_truth(sample_clips):
    # The official evaluation protocol: ground truth = the tracker run on the real clip.
    warp, static = _warp_vs_static(sample_clips, "tracked")
    print(f"ObjMC (px, original resolution) tracked GT: warp {warp:.2f} static {static:.2f}")
    assert static > 5.0
    assert warp < 0.1 * static


def test_warp_below_static_on_mask_center_labels(sample_clips):
    # Mask-centre labels (tiny profile) jump when an entity is partly occluded or a stuff region changes
    # shape; a cut-out moved along a jump cannot be followed by a frame-to-frame tracker, so the margin is
    # smaller than with tracked ground truth (about 0.6 on this data), but warp must still win clearly.
    warp, static = _warp_vs_static(sample_clips[:1], "labels")  # the val video
    warp_all, static_all = _warp_vs_static(sample_clips, "labels")
    print(f"ObjMC (px) mask-centre labels: val warp {warp:.2f} static {static:.2f}; all warp {warp_all:.2f} static {static_all:.2f}")
    assert warp < 0.75 * static
    assert warp_all < 0.75 * static_all
