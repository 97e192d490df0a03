"""Feature extractors for FID (frames) and FVD (clips), all with one interface.

An extractor has ``name`` (what goes into the ``backbone`` column), ``kind``
("frame" or "clip"), ``dim`` and is called on uint8 RGB arrays:
  frame extractors: (N, H, W, 3) -> (N, dim) float64
  clip extractors:  (B, T, H, W, 3) -> (B, dim) float64
Inputs of any size; batching is internal (``batch_size``), CPU by default.

Backbones:
  * ``InceptionFeatures`` - FID. The Inception-v3 torchscript that clean-fid (and
    StyleGAN2-ADA) use, ``inception-2015-12-05.pt``, loaded from a local file.
    Preprocessing is clean-fid's "clean" mode (``cleanfid.resize.build_resizer``:
    PIL bicubic on float channels to 299 x 299), then the network's pool3
    features (2048-d) on (x - 128) / 128, exactly as clean-fid's
    ``InceptionV3W`` without its download. ``as_cleanfid_extractor()`` returns the
    model function for clean-fid's ``custom_feat_extractor`` hook.
  * ``I3DFeatures`` - FVD. The I3D (Kinetics-400) torchscript of the StyleGAN-V
    protocol, ``i3d_torchscript.pt``, loaded from a local file, called as
    StyleGAN-V does: whole clips (B, 3, T, H, W) in [0, 255] with
    ``rescale=True, resize=True, return_features=True`` (the network resizes to
    224 x 224 and rescales to [-1, 1] itself); 400-d features before the softmax.
  * ``FallbackFrameFeatures`` ("fallback-frame-v1") and ``FallbackClipFeatures``
    ("fallback-clip-v1") - used when no weights are configured, so the metric
    code runs on a fresh machine. Small convolutional nets with *random* weights
    drawn from numpy's PCG64 with a fixed seed (the same weights on every
    machine), ReLU, and global average pooling of every layer (multi-scale
    statistics). Frames are resized to 128 x 128 (area), clips to 64 x 64 per
    frame with 3-D convolutions (sensitive to motion). Numbers on a fallback
    backbone are comparable only with numbers on the same backbone and version,
    never with published FID/FVD.

The ``official`` protocol's backbones (pytorch-fid's Inception, compute_fvd.py's I3D
preprocessing) are in ``eval.official_features``; the factories below pick by ``style``.

A configured path that does not exist raises ``FileNotFoundError`` with one
sentence: which file, where it was looked for, and how to get it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt"


def _require_file(path: str | Path, what: str, url: str, config_key: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"{what} weights file not found: looked for {p.resolve()} (from {config_key}={str(path)!r}); "
            f"download it on a machine with internet from {url}, copy it there, or unset {config_key} to use the fallback backbone."
        )
    return p


def _to_uint8(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise TypeError(f"expected uint8 RGB images, got {x.dtype}")
    if x.shape[-1] != 3:
        raise ValueError(f"expected RGB images with 3 channels last, got shape {x.shape}")
    return x


def _resize_area(frames: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) float32 in [0, 255], area (or linear when upsampling)."""
    out = np.empty((len(frames), size, size, 3), np.float32)
    for i, f in enumerate(frames):
        interp = cv2.INTER_AREA if min(f.shape[:2]) >= size else cv2.INTER_LINEAR
        out[i] = cv2.resize(f, (size, size), interpolation=interp)
    return out


# --------------------------------------------------------------------------- fallback backbones


def _random_conv_weights(rng: np.random.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """He-normal weights (fan-in) from numpy's PCG64: identical on every platform."""
    fan_in = int(np.prod(shape[1:]))
    w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    return torch.from_numpy(w.astype(np.float32))


class FallbackFrameFeatures:
    """'fallback-frame-v1': a fixed-seed random 3-layer conv net on 128 x 128 frames, 224-d."""

    kind = "frame"
    version = 1
    size = 128
    channels = (32, 64, 128)

    def __init__(self, seed: int = 0, batch_size: int = 64, device: str = "cpu"):
        rng = np.random.default_rng([seed, 0xF1D])
        cin, self.weights, self.biases = 3, [], []
        for c in self.channels:
            self.weights.append(_random_conv_weights(rng, (c, cin, 3, 3)).to(device))
            self.biases.append(torch.from_numpy((0.1 * rng.standard_normal(c)).astype(np.float32)).to(device))
            cin = c
        self.seed, self.batch_size, self.device = seed, batch_size, device
        self.name = f"fallback-frame-v{self.version}" + (f"-s{seed}" if seed else "")
        self.dim = int(sum(self.channels))

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x / 127.5 - 1.0
        pooled = []
        for w, b in zip(self.weights, self.biases):
            h = F.relu(F.conv2d(h, w, b, stride=2, padding=1))
            pooled.append(h.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = _to_uint8(frames)
        if frames.ndim == 3:
            frames = frames[None]
        out = np.empty((len(frames), self.dim), np.float64)
        for s in range(0, len(frames), self.batch_size):
            x = torch.from_numpy(_resize_area(frames[s : s + self.batch_size], self.size)).permute(0, 3, 1, 2)
            out[s : s + len(x)] = self._forward(x.to(self.device)).cpu().double().numpy()
        return out


class FallbackClipFeatures:
    """'fallback-clip-v1': a fixed-seed random 3-layer 3-D conv net on 64 x 64 clips, 112-d."""

    kind = "clip"
    version = 1
    size = 64
    channels = (16, 32, 64)

    def __init__(self, seed: int = 0, batch_size: int = 8, device: str = "cpu"):
        rng = np.random.default_rng([seed, 0xF7D])
        cin, self.weights, self.biases = 3, [], []
        for c in self.channels:
            self.weights.append(_random_conv_weights(rng, (c, cin, 3, 3, 3)).to(device))
            self.biases.append(torch.from_numpy((0.1 * rng.standard_normal(c)).astype(np.float32)).to(device))
            cin = c
        self.seed, self.batch_size, self.device = seed, batch_size, device
        self.name = f"fallback-clip-v{self.version}" + (f"-s{seed}" if seed else "")
        self.dim = int(sum(self.channels))

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W)
        h = x / 127.5 - 1.0
        pooled = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            stride = (1, 2, 2) if i == 0 else (2, 2, 2)
            if h.shape[2] < 2:
                stride = (1, 2, 2)
            h = F.relu(F.conv3d(h, w, b, stride=stride, padding=1))
            pooled.append(h.mean(dim=(2, 3, 4)))
        return torch.cat(pooled, dim=1)

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        clips = _to_uint8(clips)
        if clips.ndim == 4:
            clips = clips[None]
        B, T = clips.shape[:2]
        out = np.empty((B, self.dim), np.float64)
        for s in range(0, B, self.batch_size):
            chunk = clips[s : s + self.batch_size]
            small = _resize_area(chunk.reshape(-1, *chunk.shape[2:]), self.size).reshape(len(chunk), T, self.size, self.size, 3)
            x = torch.from_numpy(small).permute(0, 4, 1, 2, 3)
            out[s : s + len(chunk)] = self._forward(x.to(self.device)).cpu().double().numpy()
        return out


# --------------------------------------------------------------------------- real backbones


class InceptionFeatures:
    """FID features: clean-fid's Inception-v3 torchscript from a local file, "clean" preprocessing."""

    kind = "frame"
    dim = 2048

    def __init__(self, path: str | Path, batch_size: int = 32, device: str = "cpu", config_key: str = "evaluate.inception_path"):
        from cleanfid.resize import build_resizer

        p = _require_file(path, "Inception (FID)", INCEPTION_URL, config_key)
        self.model = torch.jit.load(str(p), map_location=device).eval()
        self.resize = build_resizer("clean")
        self.batch_size, self.device = batch_size, device
        self.name = "inception-2015-12-05-clean"

    def as_cleanfid_extractor(self):
        """The model function clean-fid's ``custom_feat_extractor`` expects: (B, 3, 299, 299) in [0, 255] -> (B, 2048)."""
        return self._forward

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2:] != (299, 299):
            raise ValueError(f"Inception input must be resized to 299 x 299 first, got {tuple(x.shape[2:])}")
        feats = self.model.layers.forward((x.to(self.device) - 128.0) / 128.0)
        return feats.reshape(len(x), -1)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = _to_uint8(frames)
        if frames.ndim == 3:
            frames = frames[None]
        out = np.empty((len(frames), self.dim), np.float64)
        for s in range(0, len(frames), self.batch_size):
            batch = np.stack([self.resize(f) for f in frames[s : s + self.batch_size]]).astype(np.float32)
            x = torch.from_numpy(batch).permute(0, 3, 1, 2)
            out[s : s + len(batch)] = self._forward(x).cpu().double().numpy()
        return out


class I3DFeatures:
    """FVD features: the StyleGAN-V I3D torchscript from a local file, whole clips."""

    kind = "clip"
    dim = 400

    name = "i3d-k400-stylegan-v"
    what = "I3D (FVD)"

    def __init__(self, path: str | Path, batch_size: int = 4, device: str = "cpu", config_key: str = "evaluate.i3d_path"):
        p = _require_file(path, self.what, I3D_URL, config_key)
        self.model = torch.jit.load(str(p), map_location=device).eval()
        self.batch_size, self.device = batch_size, device

    def _inputs(self, clips: np.ndarray) -> tuple[torch.Tensor, dict]:
        """One batch (B, T, H, W, 3) uint8 -> the model's input (B, 3, T, H, W) and keyword arguments."""
        x = torch.from_numpy(np.ascontiguousarray(clips)).float().permute(0, 4, 1, 2, 3)  # [0, 255]
        return x, dict(rescale=True, resize=True, return_features=True)

    @torch.no_grad()
    def __call__(self, clips: np.ndarray) -> np.ndarray:
        clips = _to_uint8(clips)
        if clips.ndim == 4:
            clips = clips[None]
        feats = []
        for s in range(0, len(clips), self.batch_size):
            x, kwargs = self._inputs(clips[s : s + self.batch_size])
            f = self.model(x.to(self.device), **kwargs)
            feats.append(f.reshape(len(x), -1).cpu().double().numpy())
        out = np.concatenate(feats, axis=0)
        self.dim = out.shape[1]
        return out


# --------------------------------------------------------------------------- factories


def frame_extractor(
    path: str | Path | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    seed: int = 0,
    config_key: str = "evaluate.inception_path",
    style: str = "clean-fid",
):
    """FID features: Inception from ``path``, or the fixed-seed fallback when ``path`` is empty.

    ``style`` is the protocol's ``fid_backbone``: "clean-fid" (``InceptionFeatures``) or
    "pytorch-fid" (``eval.official_features.PytorchFIDFeatures``). ``config_key`` only names
    the setting in the error raised for a missing file.
    """
    if not path:
        return FallbackFrameFeatures(seed=seed, batch_size=max(batch_size, 1), device=device)
    if style == "pytorch-fid":
        from eval.official_features import PytorchFIDFeatures

        return PytorchFIDFeatures(path, batch_size=batch_size, device=device, config_key=config_key)
    if style != "clean-fid":
        raise ValueError(f"FID backbone style must be 'clean-fid' or 'pytorch-fid', got {style!r}")
    return InceptionFeatures(path, batch_size=batch_size, device=device, config_key=config_key)


def clip_extractor(
    path: str | Path | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    seed: int = 0,
    config_key: str = "evaluate.i3d_path",
    style: str = "stylegan-v",
):
    """FVD features: I3D from ``path``, or the fixed-seed fallback when ``path`` is empty.

    ``style`` is the protocol's ``fvd_backbone``: "stylegan-v" (``I3DFeatures``) or "tf-hub"
    (compute_fvd.py's preprocessing, ``eval.official_features.TFHubI3DFeatures``).
    """
    if not path:
        return FallbackClipFeatures(seed=seed, batch_size=max(batch_size, 1), device=device)
    if style == "tf-hub":
        from eval.official_features import TFHubI3DFeatures

        return TFHubI3DFeatures(path, batch_size=max(batch_size, 1), device=device, config_key=config_key)
    if style != "stylegan-v":
        raise ValueError(f"FVD backbone style must be 'stylegan-v' or 'tf-hub', got {style!r}")
    return I3DFeatures(path, batch_size=batch_size, device=device, config_key=config_key)


def video_features(video: np.ndarray, frames_fx, clips_fx) -> tuple[np.ndarray, np.ndarray]:
    """One video (T, H, W, 3) -> (frame features (T, D_fid), clip feature (1, D_fvd)): what to cache per (backbone, video)."""
    video = _to_uint8(video)
    return frames_fx(video), clips_fx(video[None])
