import numpy as np
import pytest

from core.vipseg import VideoError, decode_ids, encode_id, list_video, read_mask, write_mask


def test_decode_void_stuff_and_things():
    cat, inst, thing = decode_ids(np.array([0, 1, 124, 125, 6001, 6102, 12399]))
    assert cat.tolist() == [0, 1, 124, 1, 60, 61, 123]
    assert inst.tolist() == [0, 0, 0, 25, 1, 2, 99]
    assert thing.tolist() == [False, False, False, True, True, True, True]


def test_encode_round_trip_and_range():
    for c, i, t in [(3, 0, False), (60, 7, True), (2, 0, True)]:
        v = encode_id(c, i, t)
        cat, inst, thing = decode_ids(v)
        assert (int(cat), int(inst), bool(thing)) == (c, i, t)
    with pytest.raises(ValueError):
        encode_id(125)  # stuff ids stop at 124
    with pytest.raises(ValueError):
        encode_id(1, 3, is_thing=True)  # 103 would read back as stuff


def test_sixteen_bit_masks_round_trip(tmp_path):
    ids = np.array([[0, 5], [6001, 12399]], np.int32)
    write_mask(tmp_path / "m.png", ids)
    assert np.array_equal(read_mask(tmp_path / "m.png"), ids)


def test_list_video_pairs_frames_and_masks(sample_root):
    files = list_video(sample_root, "sample_0000")
    assert len(files.frames) == len(files.masks) == 16
    with pytest.raises(VideoError, match="frames folder .* is missing"):
        list_video(sample_root, "nope")
