"""The sample dataset's scenes: motion variants share their first frame; movers go every way; splits."""

import numpy as np

from core.sample_data import make_scene, render, write_sample_dataset


def test_variants_of_a_scene_share_the_first_frame_and_differ_in_motion():
    frames = [render(make_scene(i, 6, seed=0, variants=4))[0] for i in range(4, 8)]  # scene 1, motions 0..3
    for other in frames[1:]:
        assert np.array_equal(frames[0][0], other[0])
        assert np.abs(frames[0][-1].astype(int) - other[-1].astype(int)).mean() > 1.0
    # a different scene starts differently
    assert not np.array_equal(frames[0][0], render(make_scene(8, 6, seed=0, variants=4))[0][0])


def test_movers_go_every_way():
    moves = []
    for i in range(24):
        mover = next(t for t in make_scene(i, 8, seed=0).things if t.role == "mover")
        moves.append(mover.path[-1] - mover.path[0])
    moves = np.array(moves)
    assert (moves[:, 0] > 10).any() and (moves[:, 0] < -10).any()
    assert (moves[:, 1] > 10).any() and (moves[:, 1] < -10).any()
    assert (np.linalg.norm(moves, axis=1) > 20).all()


def test_val_holds_out_motions_of_scenes_train_also_shows(tmp_path):
    summary = write_sample_dataset(tmp_path, n_videos=8, n_frames=4, variants=4)
    assert (summary["train"], summary["val"]) == (6, 2)
    train = (tmp_path / "train.txt").read_text().split()
    val = (tmp_path / "val.txt").read_text().split()
    assert val == ["sample_0003", "sample_0007"]
    first = lambda v: (tmp_path / "imgs" / v / "00000000.jpg").read_bytes()  # noqa: E731 - a one-line helper read next to its use
    for v in val:
        scene = int(v[-4:]) // 4
        siblings = [t for t in train if int(t[-4:]) // 4 == scene]
        assert len(siblings) == 3 and all(first(t) == first(v) for t in siblings)


def test_one_held_out_motion_per_scene_when_val_every_equals_variants(tmp_path):
    summary = write_sample_dataset(tmp_path, n_videos=16, n_frames=3, val_every=8, variants=8)
    assert (summary["train"], summary["val"]) == (14, 2)
    assert (tmp_path / "val.txt").read_text().split() == ["sample_0007", "sample_0015"]


def test_the_large_world_grows_the_mover_only():
    from core.sample_data import WORLDS

    for i in range(12):
        default, large = (make_scene(i, 8, seed=0, world=WORLDS[w]) for w in ("default", "large"))
        S = min(default.size)
        for scene, (lo, hi) in ((default, (0.10, 0.14)), (large, (0.13, 0.17))):
            mover = next(t for t in scene.things if t.role == "mover")
            assert lo * S <= mover.axes[1] <= hi * S
        assert [t.role for t in default.things] == [t.role for t in large.things]
        for t in large.things:
            if t.role not in ("mover", "tiny"):
                assert 0.10 * S <= t.axes[1] <= 0.14 * S, "only the mover grows"
        assert np.array_equal(default.pan, large.pan)


def test_a_still_camera_world_does_not_pan():
    from core.sample_data import World

    for i in range(4):
        assert np.ptp(make_scene(i, 8, seed=0, world=World(pan=0.0)).pan) == 0
