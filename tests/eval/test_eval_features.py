"""FID / FVD code paths: fallback backbones (0 for identical sets, growing with corruption),
torchscript loading with stand-in networks (no real weights here), clear errors for missing files."""

import cv2
import numpy as np
import pytest
import torch

from eval.bootstrap import ItemFeatures, frechet_interval
from eval.features import (
    FallbackClipFeatures,
    FallbackFrameFeatures,
    I3DFeatures,
    InceptionFeatures,
    clip_extractor,
    frame_extractor,
    video_features,
)
from eval.frechet import GaussianStats


def _clips(n: int = 20, T: int = 8, size: int = 64, seed: int = 0) -> np.ndarray:
    """Crops of real photographs panning in random directions: (n, T, size, size, 3) uint8."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(seed)
    out = np.empty((n, T, size, size, 3), np.uint8)
    for i in range(n):
        img = photos[i % len(photos)]
        H, W = img.shape[:2]
        x0, y0 = rng.uniform(0, W - size - 40), rng.uniform(0, H - size - 40)
        vx, vy = rng.uniform(-4, 4, 2)
        for t in range(T):
            M = np.float32([[1, 0, -(x0 + 20 + vx * t)], [0, 1, -(y0 + 20 + vy * t)]])
            out[i, t] = cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR)
    return out


def _noise(clips: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    if sigma == 0:
        return clips
    rng = np.random.default_rng(seed)
    return np.clip(clips + rng.normal(0, sigma, clips.shape), 0, 255).astype(np.uint8)


def _blur(clips: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return clips
    flat = clips.reshape(-1, *clips.shape[2:])
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in flat]).reshape(clips.shape)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # The fallback nets are tiny: on a shared 2-core machine, torch's thread pool competing with
    # BLAS threads costs far more than it gains. Restored afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def clips():
    return _clips()


def _frame_stats(fx, clips: np.ndarray) -> GaussianStats:
    return GaussianStats.from_features(fx(clips.reshape(-1, *clips.shape[2:])))


def _fvd(cx, a: np.ndarray, b: np.ndarray) -> float:
    return GaussianStats.from_features(cx(a)).frechet(GaussianStats.from_features(cx(b)))


def test_fallback_is_deterministic_and_named(clips):
    f1, f2 = FallbackFrameFeatures(), FallbackFrameFeatures()
    x = clips[:2, 0]
    np.testing.assert_array_equal(f1(x), f2(x))
    assert f1.name == "fallback-frame-v1" and f1(x).shape == (2, f1.dim)
    c = FallbackClipFeatures()
    assert c.name == "fallback-clip-v1" and c(clips[:3]).shape == (3, c.dim)
    assert not np.array_equal(FallbackFrameFeatures(seed=1)(x), f1(x))
    assert FallbackFrameFeatures(seed=1).name == "fallback-frame-v1-s1"
    # Batching does not change features.
    small_batches = FallbackFrameFeatures(batch_size=3)
    np.testing.assert_allclose(small_batches(clips[:2].reshape(-1, 64, 64, 3)), f1(clips[:2].reshape(-1, 64, 64, 3)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("corrupt,levels", [(_noise, [0, 8, 24, 64]), (_blur, [0, 0.8, 1.6, 3.2])])
def test_fid_fallback_zero_then_monotone(clips, corrupt, levels):
    fx = frame_extractor(None)
    clips = clips[:, ::2]  # 4 frames per clip are enough for frame statistics
    real = _frame_stats(fx, clips)
    values = [real.frechet(_frame_stats(fx, corrupt(clips, s))) for s in levels]
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert all(b > a for a, b in zip(values, values[1:])), values


@pytest.mark.parametrize("corrupt,levels", [(_noise, [0, 8, 24, 64]), (_blur, [0, 0.8, 1.6, 3.2])])
def test_fvd_fallback_zero_then_monotone(clips, corrupt, levels):
    cx = clip_extractor(None)
    values = [_fvd(cx, clips, corrupt(clips, s)) for s in levels]
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_fvd_sees_motion(clips):
    # Same frames, temporally shuffled: frame statistics equal, clip statistics not.
    cx = clip_extractor(None)
    rng = np.random.default_rng(0)
    shuffled = np.stack([c[rng.permutation(len(c))] for c in clips])
    assert _fvd(cx, clips, shuffled) > 10 * _fvd(cx, clips, clips) + 1e-3


def test_per_video_features_and_bootstrap(clips):
    fx, cx = frame_extractor(None), clip_extractor(None)
    per_video = [video_features(v, fx, cx) for v in clips[:6]]
    noisy = [video_features(v, fx, cx) for v in _noise(clips[:6], 24)]
    assert per_video[0][0].shape == (8, fx.dim) and per_video[0][1].shape == (1, cx.dim)
    fid = frechet_interval(ItemFeatures([f for f, _ in noisy]), ItemFeatures([f for f, _ in per_video]))
    same = frechet_interval(ItemFeatures([f for f, _ in per_video]), ItemFeatures([f for f, _ in per_video]))
    assert same.value == pytest.approx(0.0, abs=1e-6) and fid.value > 0
    # Streaming over videos gives the same statistics as all features at once.
    acc = GaussianStats.empty(fx.dim)
    for f, _ in per_video:
        acc.update(f)
    np.testing.assert_allclose(acc.cov, ItemFeatures([f for f, _ in per_video]).stats().cov, rtol=1e-9, atol=1e-12)


def test_missing_weights_say_which_file_where_and_how(tmp_path):
    missing = tmp_path / "weights" / "inception-2015-12-05.pt"
    with pytest.raises(FileNotFoundError) as err:
        frame_extractor(str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "https://" in msg and "fallback" in msg
    with pytest.raises(FileNotFoundError, match="i3d"):
        clip_extractor(str(tmp_path / "i3d_torchscript.pt"))


class _FakeInceptionLayers(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3, 299, 299) in [-1, 1] -> (B, 2048, 1, 1), like the real pool3 output
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, (16, 16)).reshape(x.shape[0], -1)  # 768
        return torch.cat([pooled, pooled, pooled[:, :512]], dim=1).reshape(x.shape[0], 2048, 1, 1)


class _FakeInception(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = _FakeInceptionLayers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _FakeI3D(torch.nn.Module):
    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False) -> torch.Tensor:
        assert rescale and resize and return_features
        return torch.nn.functional.adaptive_avg_pool3d(x, (2, 4, 5)).reshape(x.shape[0], -1)[:, :40].repeat(1, 10)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit deprecation notices
def test_torchscript_paths_with_stand_in_networks(tmp_path, clips):
    inc = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(_FakeInception()).save(str(inc))
    fx = frame_extractor(str(inc), batch_size=5)
    assert isinstance(fx, InceptionFeatures) and fx.name == "inception-2015-12-05-clean"
    feats = fx(clips[0])
    assert feats.shape == (8, 2048) and np.isfinite(feats).all()
    # clean-fid's hook: a function of (B, 3, 299, 299) in [0, 255]
    hook = fx.as_cleanfid_extractor()
    assert tuple(hook(torch.full((2, 3, 299, 299), 128.0)).shape) == (2, 2048)

    i3d = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(_FakeI3D()).save(str(i3d))
    cx = clip_extractor(str(i3d), batch_size=2)
    assert isinstance(cx, I3DFeatures) and cx.name == "i3d-k400-stylegan-v"
    assert cx(clips[:3]).shape == (3, 400)
