"""The base video model's components: tiny ones built from config, or a real SVD directory.

Both sizes use the same diffusers/transformers classes as Stable Video Diffusion
img2vid (``UNetSpatioTemporalConditionModel``, ``AutoencoderKLTemporalDecoder``,
``CLIPVisionModelWithProjection``, ``EulerDiscreteScheduler``), so every line of the
controller, the pipeline and the training step runs unchanged on either.

Nothing here downloads. A real SVD checkpoint is a local directory in diffusers
layout (what ``StableVideoDiffusionPipeline.save_pretrained`` writes)::

    <path>/model_index.json
    <path>/unet/{config.json, diffusion_pytorch_model.safetensors}
    <path>/vae/{config.json, diffusion_pytorch_model.safetensors}
    <path>/image_encoder/{config.json, model.safetensors}
    <path>/scheduler/scheduler_config.json
    <path>/feature_extractor/preprocessor_config.json
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    UNetSpatioTemporalConditionModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

if TYPE_CHECKING:  # pydantic is not needed to build or load a model (a bare GPU machine has none)
    from core.config import ModelSettings

# The config's dtype names (model.dtype, generate.dtype, train.controller_dtype).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

SVD_LAYOUT = (
    "a diffusers StableVideoDiffusionPipeline directory: model_index.json, unet/, vae/, image_encoder/, "
    "scheduler/ and feature_extractor/ (e.g. stabilityai/stable-video-diffusion-img2vid saved with "
    "save_pretrained; nothing is downloaded)"
)
SD15_LAYOUT = (
    "a diffusers StableDiffusionPipeline directory: unet/, vae/, text_encoder/, tokenizer/ and scheduler/ "
    "(e.g. runwayml/stable-diffusion-v1-5 saved with save_pretrained; nothing is downloaded)"
)


class MissingWeightsError(FileNotFoundError):
    """A configured weights directory does not exist or lacks a part of the expected layout."""


def require_layout(path: str | Path, parts: tuple[str, ...], layout: str) -> Path:
    """Return ``path`` if every part exists under it, else raise one sentence naming what is missing."""
    p = Path(path).expanduser()
    missing = [part for part in parts if not (p / part).exists()]
    if not p.is_dir() or missing:
        what = "does not exist" if not p.is_dir() else f"lacks {', '.join(missing)}"
        raise MissingWeightsError(f"weights directory {p} {what}; expected {layout}.")
    return p


@dataclass(frozen=True)
class TinySizes:
    """The knobs of the embedded tiny model (all channel counts multiples of 32 where GroupNorm needs it)."""

    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    attention_heads: tuple[int, ...] = (2, 4)
    vae_channels: int = 32
    vae_downsample: int = 8
    latent_channels: int = 4
    clip_hidden: int = 32
    clip_layers: int = 1
    clip_image_size: int = 224
    cross_attention_dim: int = 32
    time_embed_dim: int = 8
    num_frames: int = 8
    seed: int = 0
    pretrained: bool = False  # load the shipped, pre-fitted weights (SHIPPED_BASE) instead of random ones


def tiny_sizes(model: ModelSettings) -> TinySizes:
    """The tiny model's sizes for ``model`` settings (``model.tiny`` and the frames it makes)."""
    t = model.tiny
    return TinySizes(
        unet_channels=tuple(t.unet_channels),
        unet_layers_per_block=t.unet_layers_per_block,
        attention_heads=tuple(t.attention_heads),
        vae_channels=t.vae_channels,
        vae_downsample=t.vae_downsample,
        latent_channels=t.latent_channels,
        num_frames=model.num_frames,
        seed=t.seed,
        pretrained=t.pretrained,
    )


def tiny_unet_config(s: TinySizes) -> dict:
    n = len(s.unet_channels)
    return dict(
        sample_size=8,
        in_channels=2 * s.latent_channels,  # the noisy latent and the first frame's
        out_channels=s.latent_channels,
        down_block_types=("CrossAttnDownBlockSpatioTemporal",) * (n - 1) + ("DownBlockSpatioTemporal",),
        up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (n - 1),
        block_out_channels=tuple(s.unet_channels),
        addition_time_embed_dim=s.time_embed_dim,
        projection_class_embeddings_input_dim=3 * s.time_embed_dim,
        layers_per_block=s.unet_layers_per_block,
        cross_attention_dim=s.cross_attention_dim,
        num_attention_heads=tuple(s.attention_heads),
        num_frames=s.num_frames,
    )


def tiny_vae_config(s: TinySizes) -> dict:
    # every block but the last halves: four blocks = the real SVD VAE's factor 8
    blocks = {4: 3, 8: 4}[s.vae_downsample]
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        block_out_channels=(s.vae_channels,) * blocks,
        layers_per_block=1,
        latent_channels=s.latent_channels,
        sample_size=64,
        scaling_factor=0.18215,
        force_upcast=False,
    )


def tiny_clip_config(s: TinySizes) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=s.clip_hidden,
        intermediate_size=2 * s.clip_hidden,
        projection_dim=s.cross_attention_dim,
        num_hidden_layers=s.clip_layers,
        num_attention_heads=2,
        image_size=s.clip_image_size,
        patch_size=32,
        num_channels=3,
    )


def svd_scheduler() -> EulerDiscreteScheduler:
    """The scheduler configuration SVD img2vid ships with (EDM sigmas, v-prediction)."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_spacing="leading",
        timestep_type="continuous",
        steps_offset=1,
    )


def build_tiny_svd(sizes: TinySizes = TinySizes()) -> dict:
    """SVD-shaped components with random weights from a fixed seed: the pipeline's keyword arguments."""
    torch.manual_seed(sizes.seed)
    unet = UNetSpatioTemporalConditionModel(**tiny_unet_config(sizes))
    torch.manual_seed(sizes.seed + 1)
    vae = AutoencoderKLTemporalDecoder(**tiny_vae_config(sizes))
    torch.manual_seed(sizes.seed + 2)
    image_encoder = CLIPVisionModelWithProjection(tiny_clip_config(sizes))
    feature_extractor = CLIPImageProcessor(
        crop_size={"height": sizes.clip_image_size, "width": sizes.clip_image_size},
        size={"shortest_edge": sizes.clip_image_size},
    )
    parts = dict(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=svd_scheduler(), feature_extractor=feature_extractor)
    for m in (unet, vae, image_encoder):
        m.eval().requires_grad_(False)
    return parts


def load_svd_components(path: str | Path, torch_dtype: torch.dtype | None = None) -> dict:
    """The components of a local SVD img2vid directory in diffusers layout (never downloads)."""
    p = require_layout(
        path, ("model_index.json", "unet", "vae", "image_encoder", "scheduler", "feature_extractor"), SVD_LAYOUT
    )
    kw = dict(local_files_only=True)
    if torch_dtype is not None:
        kw["torch_dtype"] = torch_dtype
    parts = dict(
        unet=UNetSpatioTemporalConditionModel.from_pretrained(p / "unet", **kw),
        vae=AutoencoderKLTemporalDecoder.from_pretrained(p / "vae", **kw),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(p / "image_encoder", **kw),
        scheduler=EulerDiscreteScheduler.from_pretrained(p / "scheduler", local_files_only=True),
        feature_extractor=CLIPImageProcessor.from_pretrained(p / "feature_extractor", local_files_only=True),
    )
    for name in ("unet", "vae", "image_encoder"):
        parts[name].eval().requires_grad_(False)
    return parts


SHIPPED_BASE = Path(__file__).resolve().parent / "tiny_base"
FIT_COMMAND = "draganything fit-base --out {path}"


def shipped_base_folder(sizes: TinySizes = TinySizes(), path: str | Path = SHIPPED_BASE) -> Path:
    """The pre-fitted tiny base's folder (an SVD folder; the package ships one at ``SHIPPED_BASE``), checked.

    Refused with one sentence when a file is missing or the folder was fitted for other
    sizes than ``sizes`` asks for (frame counts aside: the weights do not depend on them).
    """
    p = Path(path)
    record = json.loads((p / "fit.json").read_text()) if (p / "fit.json").is_file() else {}
    how = record.get("command") or FIT_COMMAND.format(path=p)
    for part in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                 "vae/diffusion_pytorch_model.safetensors", "image_encoder/config.json", "image_encoder/model.safetensors",
                 "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json"):
        if not (p / part).is_file():
            raise MissingWeightsError(f"the tiny base file {p / part} is missing (looked in {p}); regenerate the folder with "
                                      f"`{how}`, or set model.tiny.pretrained=false for random weights")
    expected = {"unet": tiny_unet_config(sizes), "vae": tiny_vae_config(sizes)}
    for part, want in expected.items():
        have = json.loads((p / part / "config.json").read_text())
        diff = [f"{k}={_plain(have.get(k))} (asked {_plain(v)})" for k, v in want.items()
                if k not in ("num_frames", "scaling_factor", "sample_size") and _plain(have.get(k)) != _plain(v)]
        if diff:
            raise MissingWeightsError(f"the tiny base in {p} was fitted with other sizes: {part} {', '.join(diff)}; set model.tiny "
                                      f"to its sizes, fit one for these with `{FIT_COMMAND.format(path='DIR')}` and point "
                                      "model.base_model_path at it, or set model.tiny.pretrained=false")
    return p


def load_tiny_base(sizes: TinySizes = TinySizes(), path: str | Path = SHIPPED_BASE) -> dict:
    """The pre-fitted tiny base's components (``shipped_base_folder``)."""
    parts = load_svd_components(shipped_base_folder(sizes, path))
    parts["unet"].register_to_config(num_frames=sizes.num_frames)  # the pipeline's default length; no weight depends on it
    return parts


def _plain(v):
    return json.loads(json.dumps(v))  # tuples as lists, so JSON and Python values compare


def base_components(base_model_path: str | None, sizes: TinySizes = TinySizes(), torch_dtype=None) -> dict:
    """A real SVD directory when a path is configured (a local path or an fsspec URL of a folder
    published whole, downloaded once into the local cache), else the embedded tiny model (shipped or random weights)."""
    if base_model_path:
        from core.objectstore import local_folder

        return load_svd_components(local_folder(base_model_path), torch_dtype=torch_dtype)
    return load_tiny_base(sizes) if sizes.pretrained else build_tiny_svd(sizes)


def weights_fingerprint(module: torch.nn.Module, samples_per_tensor: int = 1024) -> str:
    """A short, stable hash of a module's config and weights (a strided sample of every tensor).

    Cheap enough for a 1.5 GB UNet, and any retraining or swap of weights changes it; where
    the weights were loaded from, and whether they were, does not.
    """
    h = hashlib.sha256()
    cfg = getattr(module, "config", None)
    if cfg is not None:
        as_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)  # transformers configs are objects
        # Not the bookkeeping keys (folder, class, library version, which values were defaults): the same
        # weights built in memory, saved and loaded again have the same fingerprint.
        as_dict = {k: v for k, v in as_dict.items() if not k.startswith("_") and k not in ("architectures", "dtype", "transformers_version")}
        h.update(json.dumps(as_dict, sort_keys=True, default=str).encode())
    for name, t in sorted(module.state_dict().items()):
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(flat[::step].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def vae_factor(vae_config) -> int:
    """The VAE's spatial factor (SVD: 8): every down block but the last halves."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def load_base_unet(base_model_path: str | Path | None, sizes: TinySizes = TinySizes(), torch_dtype=None):
    """The frozen base UNet alone (controller training needs nothing else of the base: the preprocess stage
    encoded the clips) and the VAE's spatial factor, read from its config file. -> (unet, factor)."""
    if not base_model_path and not sizes.pretrained:
        parts = build_tiny_svd(sizes)
        unet = parts["unet"] if torch_dtype is None else parts["unet"].to(torch_dtype)
        return unet, vae_factor(parts["vae"].config)
    # the tiny profile's shipped base: the UNet that generation and the preprocess stage load (base_components)
    p = require_layout(base_model_path, ("unet", "vae/config.json"), SVD_LAYOUT) if base_model_path else shipped_base_folder(sizes)
    kw = dict(local_files_only=True) | ({"torch_dtype": torch_dtype} if torch_dtype is not None else {})
    unet = UNetSpatioTemporalConditionModel.from_pretrained(p / "unet", **kw).eval().requires_grad_(False)
    return unet, vae_factor(AutoencoderKLTemporalDecoder.load_config(p / "vae"))
