"""Whole-entity motion error: rigid motion along the path scores ~0; a rubber sheet that drags only the centre does not."""

import cv2
import numpy as np
import pytest

from eval.bootstrap import bootstrap_ratio
from eval.entity_motion import entity_motion, item_sums, mask_points
from eval.objmc import score_video
from eval.trackers import LKTracker

H = W = 128
T = 8
CENTRE = np.array([64.0, 64.0])
RADIUS = 24


def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (H, W, 3)).astype(np.float32), (0, 0), 1.5)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def _disc() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return np.hypot(xx - CENTRE[0], yy - CENTRE[1]) <= RADIUS


def _path(step=(1.2, 0.6)) -> np.ndarray:
    return CENTRE[None] + np.arange(T)[:, None] * np.asarray(step)[None]


def _rigid_video(path: np.ndarray) -> np.ndarray:
    """The entity (its own texture, disc mask) pasted along the path over a still background."""
    bg, ent, mask = _texture(0), _texture(1), _disc().astype(np.float32)
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    frames = []
    for t in range(T):
        dx, dy = (path[t] - path[0]).astype(np.float32)
        e = cv2.remap(ent, xx - dx, yy - dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        m = cv2.remap(mask, xx - dx, yy - dy, cv2.INTER_LINEAR)[..., None]
        frames.append((m * e + (1 - m) * bg).round().astype(np.uint8))
    return np.stack(frames)


def _rubber_sheet_video(path: np.ndarray, sigma: float = 10.0) -> np.ndarray:
    """A smooth warp that moves a pixel by c(t) * exp(-r^2 / 2 sigma^2): the centre follows the path, the rim stays."""
    img = _texture(0)
    img[_disc()] = _texture(1)[_disc()]
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    frames = []
    for t in range(T):
        c = path[t] - path[0]
        sx, sy = xx.copy(), yy.copy()
        for _ in range(30):  # invert x = s + D(s) by fixed-point iteration (the warp's gradient is < 1)
            w = np.exp(-((sx - CENTRE[0]) ** 2 + (sy - CENTRE[1]) ** 2) / (2 * sigma**2))
            sx, sy = xx - c[0] * w, yy - c[1] * w
        frames.append(cv2.remap(img, sx.astype(np.float32), sy.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


def _centre_objmc(frames: np.ndarray, path: np.ndarray) -> float:
    item, _ = score_video("v", frames, path[None], tracker=LKTracker(), grid_size=0, add_centers=True)
    return float(np.nanmean(item.entities[0].per_frame))


def test_a_rigid_translation_along_the_path_scores_about_zero():
    path = _path()
    [e] = entity_motion(_rigid_video(path), _disc()[None], path[None], LKTracker())
    assert e.n_points >= 30
    assert e.error_px < 0.3
    assert e.non_uniformity < 0.05


def test_a_rubber_sheet_fools_centre_objmc_but_not_the_whole_entity_metric():
    path = _path()
    frames = _rubber_sheet_video(path)
    [e] = entity_motion(frames, _disc()[None], path[None], LKTracker())
    assert _centre_objmc(frames, path) < 1.0  # the centre follows the path: ObjMC is fooled
    assert e.non_uniformity > 0.15  # the points' displacements spread by a sixth of the motion or more
    commanded = np.linalg.norm(path[1:] - path[0], axis=1).mean()
    assert e.error_px > commanded / 3  # the rim stays behind


def test_a_still_video_errs_by_the_commanded_motion_and_is_uniform():
    path = _path()
    still = np.repeat(_rigid_video(path)[:1], T, axis=0)
    [e] = entity_motion(still, _disc()[None], path[None], LKTracker())
    commanded = np.linalg.norm(path[1:] - path[0], axis=1).mean()
    assert e.error_px == pytest.approx(commanded, rel=0.05)
    assert e.non_uniformity < 0.05


def test_errors_are_measured_at_the_evaluation_size():
    path = _path()
    frames = np.repeat(_rigid_video(path)[:1], T, axis=0)
    [small] = entity_motion(frames, _disc()[None], path[None], LKTracker())
    [big] = entity_motion(frames, _disc()[None], path[None], LKTracker(), eval_hw=(2 * H, 2 * W))
    assert big.error_px == pytest.approx(2 * small.error_px, rel=1e-6)
    assert big.non_uniformity == pytest.approx(small.non_uniformity, abs=1e-9)


def test_invisible_frames_and_lost_points_are_not_counted():
    path = _path()
    vis = np.ones((1, T), bool)
    vis[0, 3:] = False
    [e] = entity_motion(_rigid_video(path), _disc()[None], path[None], LKTracker(), visible=vis)
    assert (e.points[3:] == 0).all() and (e.points[1:3] > 0).all() and e.points[0] == 0


class _LosesHalf:
    """A tracker that follows nothing and loses every other point from frame 2 on."""

    def track(self, frames, points):
        tracks = np.repeat(points[None].astype(np.float64), len(frames), axis=0)
        valid = np.ones((len(frames), len(points)), bool)
        valid[2:, ::2] = False
        return tracks, valid


def test_a_point_lost_once_stays_lost():
    path = _path()
    [e] = entity_motion(_rigid_video(path), _disc()[None], path[None], _LosesHalf())
    assert e.points[1] == e.n_points and e.points[2] == e.points[-1] == e.n_points // 2


def test_points_cover_the_mask_evenly_and_respect_the_cap():
    mask = _disc()
    pts = mask_points(mask, max_points=48)
    assert 24 <= len(pts) <= 48
    assert mask[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
    # spread over the whole (eroded) disc, not clustered at its centre
    assert np.ptp(pts[:, 0]) > 1.4 * RADIUS and np.ptp(pts[:, 1]) > 1.4 * RADIUS
    assert len(mask_points(np.zeros((8, 8), bool))) == 0
    one = np.zeros((8, 8), bool)
    one[3, 4] = True  # a 1-pixel entity survives the erosion rule
    assert mask_points(one).tolist() == [[4.0, 3.0]]


def test_item_sums_feed_the_item_bootstrap():
    path = _path()
    items = [item_sums(entity_motion(_rigid_video(path * s / s), _disc()[None], path[None], LKTracker())) for s in (1, 1)]
    items.append(item_sums(entity_motion(_rubber_sheet_video(path), _disc()[None], path[None], LKTracker())))
    num = np.array([i["error_sum"] for i in items])
    den = np.array([i["points"] for i in items])
    ci = bootstrap_ratio(num, den, n_boot=200, seed=0)
    assert ci.value == pytest.approx(num.sum() / den.sum())
    assert ci.low <= ci.value <= ci.high
