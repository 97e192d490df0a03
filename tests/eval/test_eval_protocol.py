"""The official protocol's ObjMC rules, as the paper's scripts apply them; the project's differ on purpose."""

import numpy as np
import pytest

from core.config import load_config
from core.geometry import incircle
from eval.catalog import Identity, objmc_identity
from eval.objmc import cotracker_grid, official_center, query_grid, track_entities
from eval.protocol import OFFICIAL, PROJECT, protocol_for


def test_official_centre_of_a_border_touching_sky_band_is_the_top_left_corner():
    # Sky: rows 0-29 of a 100 x 200 frame. The official rule runs the distance transform on
    # the unpadded mask (the border is no boundary) and takes minMaxLoc's first maximum.
    sky = np.zeros((100, 200), bool)
    sky[:30] = True
    assert official_center(sky) == (0.0, 0.0, 30.0)
    # The project's rule (padded, ridge centroid) puts it in the middle of the band.
    cx, cy, r = incircle(sky)
    assert (cx, cy, r) == pytest.approx((99.5, 14.5, 15.0))


def test_official_centre_of_an_interior_disc_is_its_centre():
    yy, xx = np.mgrid[:64, :80]
    disc = (xx - 40) ** 2 + (yy - 30) ** 2 <= 10**2
    x, y, r = official_center(disc)
    assert (x, y) == (40.0, 30.0) and r == 10.0
    assert np.isnan(official_center(np.zeros((5, 5), bool))[0])


def test_official_grid_is_cotrackers_100_by_100_layout_on_its_interpolation_shape():
    # CoTracker2 interpolates to 384 x 512; the grid is linspace(m, extent - m, 100) per axis with
    # m = 512 / 64 = 8, mapped back to the video by (W - 1) / 511 and (H - 1) / 383.
    assert OFFICIAL.grid_size == 100 and OFFICIAL.grid_layout == "cotracker"
    pts = cotracker_grid(256, 256, 100)
    assert pts.shape == (10000, 2)
    sx, sy = 255 / 511, 255 / 383
    np.testing.assert_allclose(pts[0], [8 * sx, 8 * sy], atol=1e-4)
    np.testing.assert_allclose(pts[-1], [504 * sx, 376 * sy], atol=1e-4)
    np.testing.assert_allclose(pts[1] - pts[0], [496 / 99 * sx, 0], atol=1e-4)  # row-major: x varies first
    np.testing.assert_allclose(pts[100] - pts[0], [0, 368 / 99 * sy], atol=1e-4)
    spacing = np.diff(np.unique(pts[:, 0]))
    assert np.allclose(spacing, 496 / 99 * sx, atol=1e-4)  # 2.50 px at 256 wide, not 25.6 as a 10-grid
    np.testing.assert_allclose(cotracker_grid(256, 256, 1), [[256 * sx, 192 * sy]], atol=1e-4)


def test_project_grid_is_cell_centres():
    pts = query_grid(100, 200, 10, "cells")
    np.testing.assert_allclose(pts[0], [9.5, 4.5])
    with pytest.raises(ValueError, match="grid layout"):
        query_grid(10, 10, 2, "hex")


def test_official_tracks_are_truncated_to_int_like_the_official_json():
    frames = np.zeros((3, 40, 40, 3), np.uint8)

    class Drift:
        def track(self, frames, points):
            T = len(frames)
            tracks = np.stack([points + np.array([0.7 * t, -0.6 * t]) for t in range(T)])
            return tracks, np.ones(tracks.shape[:2], bool)

    tracks, _ = track_entities(frames, np.array([[10.0, 10.0]]), Drift(), grid_size=0, add_centers=True, integer=True)
    assert tracks[0].tolist() == [[10.0, 10.0], [10.0, 9.0], [11.0, 8.0]]  # int(10.7) = 10, int(9.4) = 9, int(11.4) = 11, int(8.8) = 8


def test_protocols_are_named_settings_and_identities_differ():
    assert protocol_for("official") == OFFICIAL
    assert protocol_for("official", grid_size=7) == OFFICIAL  # official has no knobs
    assert protocol_for("project", grid_size=7, add_centers=False).grid_size == 7
    assert protocol_for("project") == PROJECT and PROJECT.center_rule == "ridge" and PROJECT.add_centers
    assert OFFICIAL.fvd_frames is None and OFFICIAL.fvd_ddof == 1 and OFFICIAL.fid_ddof == 1  # compute_fvd.py: whole clips, TF-GAN
    assert PROJECT.fvd_ddof == 0 and PROJECT.fid_backbone == "clean-fid" and PROJECT.fvd_backbone == "stylegan-v"
    assert protocol_for("official", fvd_drop_to_batch=True).fvd_drop_to_batch and not OFFICIAL.fvd_drop_to_batch
    with pytest.raises(ValueError, match="official, project"):
        protocol_for("paper")
    a = objmc_identity(load_config("tiny", {"evaluate.protocol": "official"}), "vipseg-val")
    b = objmc_identity(load_config("tiny", {"evaluate.protocol": "project"}), "vipseg-val")
    assert a != b and a.label.startswith("official") and "CoTracker grid 100" in a.label and "cell grid 10" in b.label
    assert Identity.read(a.stored(), "objmc") == a  # the tables' form reads back without parsing prose
    assert Identity.read(a.label, "objmc") == a  # and an old part's ' | '-joined prose still reads


def test_the_user_study_identity_says_its_paths_are_drawn_not_tracked():
    cfg = load_config("tiny", ["evaluate.protocol=official"])
    study, labels = objmc_identity(cfg, "user-study").label, objmc_identity(cfg, "sample").label
    assert "gt drawn paths" in study and "gt tracked" not in study
    assert "gt tracked" in labels and "every first-mask id" in labels
