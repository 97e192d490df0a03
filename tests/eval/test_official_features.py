"""The official protocol's backbones: pytorch-fid's Inception from a local state dict (checked against
pytorch-fid's own code on PNG files), compute_fvd.py's preprocessing, I3D TorchScript loading.

No real weights are here: the networks are saved in the real files' formats (a state dict of
pytorch-fid's FID Inception with its initial weights, small TorchScript modules)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from eval.features import clip_extractor, frame_extractor
from eval.official_features import PytorchFIDFeatures, TFHubI3DFeatures, fid_inception, fvd_preprocess, tf_resize_bilinear


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fidw") / "pt_inception-2015-12-05-test.pth"
    torch.save(fid_inception().state_dict(), path)
    return path


def _frames(n: int = 3, size: int = 48, seed: int = 0) -> np.ndarray:
    from skimage import data

    rng = np.random.default_rng(seed)
    img = data.astronaut()
    out = []
    for _ in range(n):
        y, x = rng.integers(0, img.shape[0] - size, 2)
        out.append(img[y : y + size, x : x + size])
    return np.stack(out)


def test_official_fid_features_equal_pytorch_fids_own_activations_on_png_files(fid_weights, tmp_path, monkeypatch):
    from PIL import Image
    from pytorch_fid import fid_score, inception

    frames = _frames()
    files = []
    for i, f in enumerate(frames):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(f).save(files[-1])
    # pytorch-fid's own network, its weights read from the same local file instead of its download
    monkeypatch.setattr(inception, "load_state_dict_from_url", lambda *a, **k: torch.load(fid_weights, weights_only=True))
    theirs_model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    theirs = fid_score.get_activations([str(f) for f in files], theirs_model, batch_size=2, dims=2048, device="cpu", num_workers=0)
    ours = frame_extractor(fid_weights, style="pytorch-fid")(frames)
    assert isinstance(frame_extractor(fid_weights, style="pytorch-fid"), PytorchFIDFeatures)
    assert ours.shape == (3, 2048)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())


def test_official_fid_weights_missing_or_wrong_give_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pt_inception-2015-12-05.*evaluate.pytorch_fid_path") as e:
        frame_extractor(tmp_path / "pt_inception-2015-12-05-6726825d.pth", style="pytorch-fid", config_key="evaluate.pytorch_fid_path")
    assert str(e.value).count(". ") == 0
    bad = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="is not pytorch-fid's FID Inception state dict"):
        PytorchFIDFeatures(bad)


def test_tf1_resize_bilinear_has_no_half_pixel_centres():
    # TF1 resize_bilinear (align_corners=False): source = dest * in / out. Halving takes every
    # other pixel exactly, where a half-pixel bilinear would average neighbours.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 8, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(tf_resize_bilinear(x, (4, 3)), x[:, ::2, ::2])
    up = tf_resize_bilinear(np.array([[[[0.0]], [[10.0]]]], np.float32), (4, 1))[0, :, 0, 0]
    np.testing.assert_allclose(up, [0, 5, 10, 10])  # the last rows clamp to the edge
    v = fvd_preprocess(np.full((2, 14, 256, 256, 3), 255, np.uint8))
    assert v.shape == (2, 14, 224, 224, 3) and np.allclose(v, 1.0)
    assert np.allclose(fvd_preprocess(np.zeros((1, 3, 10, 10, 3), np.uint8)), -1.0)


class PlainI3D(torch.nn.Module):
    """Stands in for an I3D TorchScript taking (B, 3, T, 224, 224) in [-1, 1]; remembers nothing,
    so its output encodes what it saw: per-channel means, T, H, W, min and max."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        info = torch.tensor([float(T), float(H), float(W)]).expand(B, 3)
        return torch.cat([x.mean(dim=(2, 3, 4)), info, x.amin(dim=(1, 2, 3, 4))[:, None], x.amax(dim=(1, 2, 3, 4))[:, None]], dim=1)


class StyleGANVI3D(torch.nn.Module):
    """Has StyleGAN-V's switches; the official call must turn its own resize and rescale off."""

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False) -> torch.Tensor:
        flags = torch.tensor([float(rescale), float(resize), float(return_features)]).expand(x.shape[0], 3)
        return torch.cat([x.mean(dim=(1, 2, 3, 4))[:, None], flags], dim=1)


def test_official_fvd_embeds_whole_clips_at_224_in_minus_one_to_one(tmp_path):
    path = tmp_path / "i3d.pt"
    torch.jit.script(PlainI3D()).save(str(path))
    rng = np.random.default_rng(1)
    clips = rng.integers(0, 256, (3, 14, 256, 256, 3)).astype(np.uint8)
    fx = clip_extractor(path, style="tf-hub", batch_size=2)
    assert isinstance(fx, TFHubI3DFeatures) and fx.name == "i3d-k400-tfhub-preprocess"
    out = fx(clips)
    assert out.shape == (3, 8)
    np.testing.assert_array_equal(out[:, 3:6], [[14, 224, 224]] * 3)  # the whole 14-frame clip at 224 x 224
    assert (out[:, 6] >= -1.0).all() and (out[:, 7] <= 1.0).all()
    expect = fvd_preprocess(clips).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(out[:, :3], expect, rtol=1e-5, atol=1e-6)


def test_official_fvd_switches_off_stylegan_vs_own_preprocessing(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(StyleGANVI3D()).save(str(path))
    out = TFHubI3DFeatures(path)(np.zeros((2, 14, 64, 64, 3), np.uint8))
    np.testing.assert_array_equal(out[:, 1:], [[0, 0, 1]] * 2)  # rescale off, resize off, features
    np.testing.assert_allclose(out[:, 0], -1.0)
    with pytest.raises(FileNotFoundError, match="evaluate.i3d_path"):
        TFHubI3DFeatures(tmp_path / "absent.pt")
