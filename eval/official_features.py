"""The ``official`` protocol's backbones: FID and FVD as the DragAnything paper's scripts compute them.

  * ``PytorchFIDFeatures`` - ``utils/Eval_FID.sh`` runs ``python -m pytorch_fid`` on two
    folders of frames. pytorch-fid's network is torchvision's Inception-v3 with the FID
    blocks (``pytorch_fid.inception.FIDInception*``) and the TF FID weights
    ``pt_inception-2015-12-05-6726825d.pth`` (a state dict), read here from a local file
    (pytorch-fid itself downloads them; this never does). Preprocessing as pytorch-fid:
    ``ToTensor`` (uint8 -> [0, 1]), ``F.interpolate(..., (299, 299), 'bilinear',
    align_corners=False)``, ``2 x - 1``; features are pool3 (2048-d).
  * ``TFHubI3DFeatures`` - ``utils/Eval_FVD/compute_fvd.py``: each whole clip (all its
    frames), ``preprocess(videos, (224, 224))`` = TF1 ``tf.image.resize_bilinear``
    (``align_corners=False``, no half-pixel centres: source = dest * in / out) then
    ``2 x / 255 - 1``, then TF-hub's ``i3d-kinetics-400/1`` and its
    ``RGB/inception_i3d/Mean:0`` tensor (the 400 Kinetics logits, averaged over time). The
    network is a TorchScript file at a configured path: StyleGAN-V's ``i3d_torchscript.pt``
    (a port of that TF-hub model, called with its own resize and rescale switched off, so
    the preprocessing above is the only one) or any TorchScript module taking
    (B, 3, T, 224, 224) in [-1, 1] and returning (B, 400).

A configured path that does not exist raises ``FileNotFoundError`` with one sentence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from eval.features import I3DFeatures, _require_file, _to_uint8

PYTORCH_FID_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt"


def fid_inception() -> nn.Module:
    """pytorch-fid's FID Inception-v3 architecture (``fid_inception_v3`` without its download)."""
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2, _inception_v3

    net = _inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


class Pool3(nn.Module):
    """pytorch-fid's ``InceptionV3(output_blocks=[3])``: input in [0, 1], pool3 features out."""

    def __init__(self, net: nn.Module):
        super().__init__()
        n = net
        self.body = nn.Sequential(
            n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            n.Conv2d_3b_1x1, n.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e,
            n.Mixed_7a, n.Mixed_7b, n.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1)),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.body(2 * x - 1).flatten(1)


class PytorchFIDFeatures:
    """Official FID features: pytorch-fid's Inception pool3 from a local FID weights file."""

    kind = "frame"
    dim = 2048

    def __init__(self, path: str | Path, batch_size: int = 50, device: str = "cpu", config_key: str = "evaluate.pytorch_fid_path"):
        p = _require_file(path, "pytorch-fid Inception (official FID)", PYTORCH_FID_URL, config_key)
        net = fid_inception()
        try:
            net.load_state_dict(torch.load(str(p), map_location="cpu", weights_only=True))
        except (RuntimeError, KeyError) as e:
            raise ValueError(f"{p} is not pytorch-fid's FID Inception state dict (pt_inception-2015-12-05-*.pth): {str(e).splitlines()[0]}") from e
        self.model = Pool3(net).eval().to(device)
        self.batch_size, self.device = batch_size, device
        self.name = "pytorch-fid-inception-2015-12-05"

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = _to_uint8(frames)
        if frames.ndim == 3:
            frames = frames[None]
        out = np.empty((len(frames), self.dim), np.float64)
        for s in range(0, len(frames), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[s : s + self.batch_size])).permute(0, 3, 1, 2).float() / 255.0
            out[s : s + len(x)] = self.model(x.to(self.device)).cpu().double().numpy()
        return out


def _tf1_bilinear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF1 ``resize_bilinear`` (align_corners=False, half_pixel_centers=False) along one axis."""
    src = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def tf_resize_bilinear(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, C) -> (N, size[0], size[1], C) float32, as TF1's ``tf.image.resize_bilinear``."""
    x = np.asarray(frames, np.float32)
    y0, y1, fy = _tf1_bilinear_axis(x.shape[1], size[0])
    x0, x1, fx = _tf1_bilinear_axis(x.shape[2], size[1])
    rows = x[:, y0] + (x[:, y1] - x[:, y0]) * fy[None, :, None, None]
    return rows[:, :, x0] + (rows[:, :, x1] - rows[:, :, x0]) * fx[None, None, :, None]


def fvd_preprocess(clips: np.ndarray, size: tuple[int, int] = (224, 224)) -> np.ndarray:
    """compute_fvd.py's ``preprocess(videos, (224, 224))``: (B, T, H, W, 3) uint8 -> float32 in [-1, 1]."""
    B, T = clips.shape[:2]
    frames = tf_resize_bilinear(clips.reshape(B * T, *clips.shape[2:]), size)
    return (2.0 * frames / 255.0 - 1.0).reshape(B, T, size[0], size[1], clips.shape[-1])


class TFHubI3DFeatures(I3DFeatures):
    """Official FVD features: whole clips, TF-GAN's preprocessing, the Kinetics-400 I3D logits."""

    name = "i3d-k400-tfhub-preprocess"
    what = "I3D (official FVD)"

    def __init__(self, path: str | Path, batch_size: int = 16, device: str = "cpu", config_key: str = "evaluate.i3d_path"):
        super().__init__(path, batch_size, device, config_key)
        args = [a.name for a in self.model.forward.schema.arguments]
        # StyleGAN-V's port resizes and rescales by itself unless told not to.
        self.kwargs = dict(rescale=False, resize=False, return_features=True) if "rescale" in args else {}

    def _inputs(self, clips: np.ndarray) -> tuple[torch.Tensor, dict]:
        return torch.from_numpy(fvd_preprocess(clips)).permute(0, 4, 1, 2, 3), self.kwargs  # (B, 3, T, 224, 224)
