"""CoTracker is called as the official trajectory script calls it: its own grid, no query points (so
no support grid), BGR frames, every frame given. A fake CoTracker checkout records what it receives."""

import sys

import numpy as np
import pytest

from eval.objmc import track_entities
from eval.trackers import CoTrackerTracker

FAKE = '''
import torch

CALLS = []


class CoTrackerPredictor(torch.nn.Module):
    def __init__(self, checkpoint=None):
        super().__init__()
        self.checkpoint = checkpoint

    def forward(self, video, queries=None, segm_mask=None, grid_size=0, grid_query_frame=0, backward_tracking=False):
        CALLS.append(dict(video=video.clone(), queries=None if queries is None else queries.clone(), grid_size=grid_size,
                          grid_query_frame=grid_query_frame, backward_tracking=backward_tracking))
        B, T, C, H, W = video.shape
        if queries is None:  # its own grid, drifting right by 1 px a frame
            ys, xs = torch.meshgrid(torch.linspace(2, H - 3, grid_size), torch.linspace(2, W - 3, grid_size), indexing="ij")
            pts = torch.stack([xs.flatten(), ys.flatten()], dim=1)
        else:
            pts = queries[0, :, 1:]
        tracks = pts[None, None].repeat(B, T, 1, 1) + torch.arange(T).float()[None, :, None, None] * torch.tensor([1.0, 0.0])
        return tracks, torch.ones(B, T, pts.shape[0], dtype=torch.bool)
'''


@pytest.fixture
def fake_cotracker(tmp_path, monkeypatch):
    pkg = tmp_path / "co-tracker" / "cotracker"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "predictor.py").write_text(FAKE)
    ckpt = tmp_path / "cotracker2.pth"
    ckpt.write_bytes(b"fake")
    for name in [m for m in sys.modules if m == "cotracker" or m.startswith("cotracker.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", list(sys.path))
    tracker = CoTrackerTracker(str(pkg.parent), str(ckpt))
    yield tracker, sys.modules["cotracker.predictor"].CALLS
    for name in [m for m in sys.modules if m == "cotracker" or m.startswith("cotracker.")]:
        del sys.modules[name]


def test_official_rules_call_cotracker_on_its_own_grid_with_bgr_frames_and_the_whole_clip(fake_cotracker):
    tracker, calls = fake_cotracker
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, 48, 64, 3)).astype(np.uint8)  # the whole clip: 20 frames, not 14
    centers = np.array([[10.0, 10.0], [40.0, 30.0]])
    tracks, valid = track_entities(frames, centers, tracker, grid_size=5, add_centers=False, layout="cotracker", integer=True)
    (call,) = calls
    assert call["queries"] is None and call["grid_size"] == 5  # no query points: no support grid
    assert call["grid_query_frame"] == 0 and call["backward_tracking"] is False
    video = call["video"].numpy()
    assert video.shape == (1, 20, 3, 48, 64)
    np.testing.assert_array_equal(video[0, :, 0], frames[..., 2])  # channel 0 is blue: BGR as cv2.imread
    np.testing.assert_array_equal(video[0, :, 2], frames[..., 0])
    assert tracks.shape == (2, 20, 2) and valid.all()
    # the nearest track by its predicted frame-0 position, then followed (1 px a frame), truncated to int
    # grid x 2, 16.75, ...; y 2, 12.75, ...: (10, 10) is nearest (16.75, 12.75)
    assert tracks[0, 0].tolist() == [16.0, 12.0] and tracks[0, 19].tolist() == [35.0, 12.0]


def test_project_rules_pass_query_points_in_rgb(fake_cotracker):
    tracker, calls = fake_cotracker
    frames = np.zeros((6, 32, 32, 3), np.uint8)
    frames[..., 0] = 200
    track_entities(frames, np.array([[5.0, 5.0]]), tracker, grid_size=3, add_centers=True, layout="cells")
    (call,) = calls
    assert call["queries"] is not None and call["queries"].shape == (1, 1 + 9, 3)
    assert call["video"][0, :, 0].max() == 200  # RGB as given
