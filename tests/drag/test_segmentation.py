import pytest

from model.segmentation import GrabCutSegmenter, SamSegmenter, make_segmenter


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_grabcut_segments_an_object_from_one_click(scene_image):
    img, truth = scene_image
    seg = GrabCutSegmenter().segment(img, [(170, 120)])
    assert seg.mask.shape == truth.shape and seg.method == "grabcut"
    assert _iou(seg.mask, truth) > 0.8, _iou(seg.mask, truth)


def test_negative_clicks_and_no_click(scene_image):
    img, truth = scene_image
    seg = GrabCutSegmenter().segment(img, [(170, 120)], negative=[(30, 30)])
    assert not seg.mask[30, 30]
    with pytest.raises(ValueError, match="click at least once"):
        GrabCutSegmenter().segment(img, [])


def test_sam_wrapper_with_random_weights_returns_an_image_sized_mask(scene_image):
    img, _ = scene_image
    sam = SamSegmenter(None, "vit_b", random_weights=True)
    seg = sam.segment(img, [(170, 120)])
    assert seg.mask.shape == img.shape[:2] and seg.mask.dtype == bool and len(seg.candidates) == 3
    key = sam._image_key
    sam.segment(img, [(100, 100)], negative=[(170, 120)], choice=0)  # same image: embedding reused
    assert sam._image_key == key


def test_missing_sam_checkpoint_is_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"SAM checkpoint not found at .*sam_vit_b_01ec64\.pth"):
        make_segmenter(str(tmp_path / "nope.pth"))
    assert make_segmenter(None).name == "grabcut"
