import cv2
import numpy as np
import pytest

from core.geometry import incircle, incircles, rescale, scale_points


def _disc(h, w, cx, cy, r):
    ys, xs = np.mgrid[0:h, 0:w]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r**2


def test_disc_centre_and_radius():
    cx, cy, r = incircle(_disc(80, 100, 40.0, 30.0, 12))
    assert abs(cx - 40) < 0.3 and abs(cy - 30) < 0.3
    assert abs(r - 12.5) < 1.0  # distance to the first background pixel


def test_rectangle_radius_is_half_the_short_side():
    m = np.zeros((60, 90), bool)
    m[10:30, 20:80] = True  # 20 x 60
    cx, cy, r = incircle(m)
    assert abs(r - 10) <= 1.0
    assert abs(cy - 19.5) < 0.5 and abs(cx - 49.5) < 1.0  # the ridge's middle


def test_elongated_rotated_ellipse_centre_is_exact():
    m = np.zeros((200, 200), np.uint8)
    cv2.ellipse(m, (97, 103), (60, 22), 30, 0, 360, 1, -1)
    cx, cy, r = incircle(m.astype(bool))
    assert np.hypot(cx - 97, cy - 103) < 0.5
    assert abs(r - 22) < 1.5


def test_frame_border_is_a_boundary():
    m = np.zeros((40, 40), bool)
    m[:, :10] = True  # a strip along the left edge
    cx, cy, r = incircle(m)
    assert 3.5 <= cx <= 5.5 and abs(r - 5) <= 1.0


def test_l_shape_centre_stays_inside_the_mask():
    m = np.zeros((100, 100), bool)
    m[10:90, 10:40] = True
    m[60:90, 10:90] = True
    cx, cy, _ = incircle(m)
    assert m[int(round(cy)), int(round(cx))]


def test_empty_mask():
    cx, cy, r = incircle(np.zeros((5, 5), bool))
    assert np.isnan(cx) and np.isnan(cy) and r == 0


def test_incircles_matches_one_by_one():
    ids = np.zeros((64, 64), np.int32)
    ids[_disc(64, 64, 20, 20, 8)] = 6001
    ids[_disc(64, 64, 45, 40, 5)] = 3
    ids[0:4, 50:60] = 7001
    ent = np.array([3, 6001, 7001, 999])
    c, r, a = incircles(ids, ent)
    for k, e in enumerate(ent[:3]):
        ex, ey, er = incircle(ids == e)
        assert np.allclose(c[k], [ex, ey]) and r[k] == pytest.approx(er)
        assert a[k] == (ids == e).sum()
    assert np.isnan(c[3]).all() and r[3] == 0 and a[3] == 0


def test_scale_points_maps_pixel_centres():
    p = np.array([[0.0, 0.0], [319.0, 239.0]])
    q = scale_points(p, (240, 320), (480, 640))
    assert np.allclose(q, [[0.5, 0.5], [638.5, 478.5]])
    assert np.allclose(scale_points(q, (480, 640), (240, 320)), p)


def test_rescale_keeps_the_input_kind_and_dtype():
    import torch

    p32 = np.array([[1.0, 2.0], [10.0, 20.0]], np.float32)
    out = rescale(p32, 2.0, 0.5)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.stack([(p32[:, 0] + 0.5) * 2.0 - 0.5, (p32[:, 1] + 0.5) * 0.5 - 0.5], 1))
    assert rescale(np.array([[3, 4]]), 2.0).dtype == np.float64  # integer points become float
    t = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    tout = rescale(t, 3.0, 4.0)
    assert isinstance(tout, torch.Tensor) and tout.dtype == torch.float64
    assert torch.equal(tout, torch.tensor([[[4.0, 9.5]]], dtype=torch.float64))
    assert torch.equal(t, torch.tensor([[[1.0, 2.0]]], dtype=torch.float64))  # the input is left alone
