import numpy as np
import pytest
import torch

from model.maps import (
    CONDITIONINGS,
    box_maps,
    entity_maps,
    flow_maps,
    gaussian_maps,
    interpolate_path,
    paint_owner,
    point_maps,
    render_conditions,
    trajectory_maps,
)


def _scene(t=6, h=48, w=64):
    g = torch.Generator().manual_seed(0)
    centers = torch.stack(
        [torch.linspace(8, 50, t), torch.linspace(10, 30, t)], -1
    )[:, None].repeat(1, 3, 1) + torch.tensor([[0.0, 0.0], [3.0, 12.0], [-5.0, 5.0]])
    radii = torch.tensor([6.0, 4.0, 3.0])
    vectors = torch.randn(3, 5, generator=g)
    return centers, radii, vectors, h, w


def test_entity_map_puts_each_vector_at_its_point_in_every_frame():
    centers, radii, vectors, h, w = _scene()
    centers[:, 1] += torch.tensor([30.0, 0.0])  # keep discs apart
    centers[:, 2] += torch.tensor([0.0, -8.0])
    e = entity_maps(vectors, centers, radii, h, w)
    assert e.shape == (6, 5, h, w)
    for t in range(6):
        for k in range(3):
            x, y = centers[t, k].round().long().tolist()
            if 0 <= x < w and 0 <= y < h:
                torch.testing.assert_close(e[t, :, y, x], vectors[k], rtol=0, atol=0)
            # the painted area is the disc: its centroid is the trajectory point
            owner = paint_owner(centers[:, k : k + 1], radii[k : k + 1], h, w)[t] == 0
            ys, xs = torch.nonzero(owner, as_tuple=True)
            if len(ys) and 0 < x < w - 1 and 0 < y < h - 1 and k < 2:
                assert abs(xs.float().mean() - centers[t, k, 0]) < 0.6
                assert abs(ys.float().mean() - centers[t, k, 1]) < 0.6
                assert len(ys) == pytest.approx(float(np.pi * radii[k] ** 2), rel=0.15)


def test_entity_map_is_constant_inside_the_disc_and_zero_outside():
    c = torch.tensor([[[20.0, 20.0]]])
    v = torch.arange(4.0)[None] + 1
    e = entity_maps(v, c, torch.tensor([5.0]), 40, 40)
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    inside = (yy - 20) ** 2 + (xx - 20) ** 2 <= 25
    assert torch.equal(e[0][:, inside], v.t().expand(-1, int(inside.sum())))
    assert e[0][:, ~inside].abs().sum() == 0


def test_later_entity_wins_where_discs_overlap():
    c = torch.tensor([[[20.0, 20.0], [22.0, 20.0]]])
    owner = paint_owner(c, torch.tensor([6.0, 3.0]), 40, 40)
    assert owner[0, 20, 22] == 1 and owner[0, 20, 15] == 0 and owner[0, 0, 0] == -1


def test_gaussian_peak_sigma_and_support_follow_the_radius():
    c = torch.tensor([[[30.0, 20.0]], [[10.0, 25.0]]])
    g = gaussian_maps(c, torch.tensor([10.0]), 40, 50)
    assert g.shape == (2, 1, 40, 50)
    for t in range(2):
        flat = int(torch.argmax(g[t, 0]))
        assert (flat % 50, flat // 50) == tuple(c[t, 0].long().tolist())
    x0, y0 = 30, 20
    assert g[0, 0, y0, x0] == pytest.approx(1.0)
    assert g[0, 0, y0, x0 + 4] == pytest.approx(np.exp(-16 / (2 * 4.0**2)), rel=1e-5)  # sigma = 0.4 r
    assert g[0, 0, y0, x0 + 11] == 0  # support r
    wide = gaussian_maps(c, torch.tensor([10.0]), 40, 50, sigma_ratio=0.8, support_ratio=1.5)
    assert wide[0, 0, y0, x0 + 12] > 0
    assert gaussian_maps(c, torch.tensor([2.0]), 40, 50).sum() == 0  # tiny entities skipped


def test_baseline_maps_follow_the_points():
    centers, radii, _, h, w = _scene()
    p = point_maps(centers, h, w)
    tr = trajectory_maps(centers, h, w)
    fl = flow_maps(centers, h, w)
    bx = box_maps(centers, radii, h, w)
    assert p.shape == bx.shape == (6, 1, h, w) and tr.shape == fl.shape == (6, 2, h, w)
    x, y = centers[3, 0].round().long().tolist()
    assert p[3, 0, y, x] == 1 and bx[3, 0, y, x] == 1
    assert tr[0].abs().sum() == 0  # no motion before the first frame
    step = (centers[3, 0] - centers[2, 0]) / torch.tensor([w, h])
    torch.testing.assert_close(tr[3, :, y, x], step)
    assert fl[3, 0].abs().max() > 0 and (fl[3, 0] != 0).sum() > (tr[3, 0] != 0).sum()  # filtered: dense


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_every_conditioning_renders(conditioning):
    centers, radii, vectors, h, w = _scene()
    maps = render_conditions(conditioning, centers, radii, h, w, vectors=vectors)
    for m in maps.values():
        assert m.shape[0] == 6 and m.shape[-2:] == (h, w) and torch.isfinite(m).all()


def test_pchip_path_passes_through_points_without_overshoot():
    pts = np.array([[0, 0], [10, 8], [20, 8], [30, 0]], dtype=float)
    out = interpolate_path(pts, 25)
    assert out.shape == (25, 2)
    np.testing.assert_allclose(out[0], pts[0], atol=1e-5)
    np.testing.assert_allclose(out[-1], pts[-1], atol=1e-5)
    assert out[:, 1].max() <= 8 + 1e-4 and np.all(np.diff(out[:, 0]) > 0)
    assert np.allclose(interpolate_path([[5, 6]], 4), [[5, 6]] * 4)


def test_pipeline_uses_the_shared_incircle():
    from core.geometry import incircle

    m = np.zeros((40, 60), bool)
    m[10:30, 5:55] = True
    x, y, r = incircle(m)
    assert 9 <= r <= 11 and 18 <= y <= 21
