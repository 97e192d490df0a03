"""One validated configuration object, loaded from YAML profiles in ``configs/``.

A profile is a YAML file (``configs/<name>.yaml``) or a path to one. Values can be
overridden with ``key.sub=value`` strings (from the CLI or deployment parameters).
Every value is checked before any work starts; a bad one raises ``ConfigError``
naming the key, what was given and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.config_yaml import ConfigError, load_file, load_value
from core.names import CONDITIONINGS, PROTOCOLS, TRACKERS  # noqa: F401 - re-exported: the config's Literals are made of them

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"




class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # NaN or inf is never a setting


class FrameSampling(_Section):
    """Which frames of a video become the L-frame clip: start, start+stride, ..."""

    count: int = Field(14, ge=2, le=1024, description="L, frames per clip")
    stride: int = Field(1, ge=1, le=1000)
    start: int = Field(0, ge=0)

    def needed(self) -> int:
        return self.start + (self.count - 1) * self.stride + 1

    def indices(self) -> list[int]:
        return [self.start + i * self.stride for i in range(self.count)]


class LKTracker(_Section):
    """OpenCV pyramidal Lucas-Kanade with a forward-backward check."""

    win_size: int = Field(9, ge=5, description="LK window; small windows keep small entities apart from their background")
    max_level: int = Field(3, ge=0)
    fb_threshold_px: float = Field(1.0, gt=0)
    grid_step_px: int = Field(4, ge=1, description="spacing of the points tracked around the centre")
    min_points: int = Field(3, ge=1, description="fewer surviving points than this = entity lost")


class CoTrackerSettings(_Section):
    """CoTracker from a local checkout; it is not on PyPI and nothing downloads."""

    repo_path: str | None = None
    checkpoint: str | None = None
    grid_size: int = Field(30, ge=2)


class TrackerSettings(_Section):
    kind: Literal[TRACKERS] = "lk"
    lk: LKTracker = LKTracker()
    cotracker: CoTrackerSettings = CoTrackerSettings()


class LabelsSettings(_Section):
    frames: FrameSampling = FrameSampling()
    resolution: tuple[int, int] = Field((256, 256), description="(height, width) of the labels")
    trajectory_source: Literal["mask-center", "tracker"] = "mask-center"
    tracker: TrackerSettings = TrackerSettings()
    include_void: bool = False
    min_area_px: int = Field(4, ge=1, description="first-frame entities smaller than this are skipped")
    chunk_size: int = Field(4, ge=1, le=10_000, description="videos per Ray task")
    frames_cache: bool = True
    embeddings: bool = Field(True, description="also write entity vectors of the configured extractor (model.entity_*)")
    max_frame_pixels: int = Field(
        40_000_000, ge=1, le=2**30, description="frames and masks whose header claims more pixels are rejected before decoding"
    )

    def digest(self) -> str:
        """Short hash of what label rows and label rejects depend on (not chunking, caching or embeddings)."""
        payload = self.model_dump(mode="json", include={"frames", "resolution", "trajectory_source", "include_void",
                                                        "min_area_px", "max_frame_pixels"})
        if self.trajectory_source == "tracker":
            payload["tracker"] = self.tracker.model_dump(mode="json")
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @field_validator("resolution")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 8:
            raise ValueError("height and width must be at least 8")
        return v


class GenerateSettings(_Section):
    """Generating the evaluation suites' videos (the model's own sampling knobs live under ``model``)."""

    seeds: tuple[int, ...] = Field((0,), min_length=1, description="one video per (item, seed)")
    fps: int = Field(7, ge=1, le=240, description="frame rate of the written mp4 (the model's micro-conditioning is model.fps)")
    items_per_task: int = Field(4, ge=1, le=10_000, description="items per Ray task: the model loads once per task")
    num_inference_steps: int = Field(25, ge=1, le=1000)
    min_guidance_scale: float = Field(1.0, ge=0, description="classifier-free guidance at the first frame (ramped)")
    max_guidance_scale: float = Field(3.0, ge=0, description="... and at the last frame (official: 1 -> 3)")
    motion_bucket_id: int = Field(127, ge=0, le=255)
    noise_aug_strength: float = Field(0.02, ge=0)
    time_ids: Literal["configured", "official"] = Field(
        "configured", description="SVD's micro-conditioning: configured = (model.fps - 1, motion_bucket_id, noise_aug_strength); "
        "official = [6, 128, 0.02] whatever those are, as the official pipeline passes them (docs/method.md)"
    )
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="where generation runs (auto = the task's GPU when it has one)")
    dtype: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="dtype of every model at inference (fp16: the VAE encodes upcast, as diffusers does)")
    cpu_offload: bool = Field(False, description="diffusers' enable_model_cpu_offload: each model on the GPU only while it runs (small GPUs)")
    decode_chunk_size: int = Field(8, ge=1, description="frames the VAE decodes at a time (diffusers' decode_chunk_size)")

    @model_validator(mode="after")
    def _guidance_ramp(self) -> GenerateSettings:
        if self.min_guidance_scale > self.max_guidance_scale:
            raise ValueError(
                f"generate.min_guidance_scale ({self.min_guidance_scale:g}) is above generate.max_guidance_scale "
                f"({self.max_guidance_scale:g}); the guidance ramps from min to max, so lower min or raise max"
            )
        return self


class EvaluateSettings(_Section):
    """ObjMC / FID / FVD (docs/evaluation.md). Weight paths are local files; None = the fixed-seed fallback backbone."""

    protocol: Literal[PROTOCOLS] = Field(
        "project",
        description="the rules every number is made with: 'official' reproduces the paper's scripts (CoTracker grid 100 "
        "in CoTracker's layout, the official centre rule, videos tracked at the original size, pytorch-fid's FID, compute_fvd.py's FVD on "
        "whole clips); 'project' "
        "the project's rules (the grid/centre knobs below). Each number stores its protocol; the tiny demo uses project "
        "because the official rule tracks its 64x64 videos upscaled to the original size, where LK loses them",
    )
    tracker: TrackerSettings = TrackerSettings()
    grid_size: int = Field(10, ge=2, description="ObjMC tracking grid of the project protocol (official: 100, fixed)")
    add_centers: bool = Field(True, description="project protocol: also track the exact start points (official: grid only)")
    ground_truth: Literal["tracked", "labels"] = Field(
        "tracked", description="project protocol: suite trajectories are the real clip tracked from the first-frame centres (official), or the label trajectories"
    )
    inception_path: str | None = Field(None, description="project FID: clean-fid's inception-2015-12-05.pt (TorchScript)")
    pytorch_fid_path: str | None = Field(
        None, description="official FID: pytorch-fid's FID Inception weights pt_inception-2015-12-05-6726825d.pth (state dict)"
    )
    i3d_path: str | None = Field(
        None, description="FVD: I3D Kinetics-400 TorchScript (StyleGAN-V's i3d_torchscript.pt, a port of TF-hub's i3d-kinetics-400/1)"
    )
    fvd_drop_to_batch: bool = Field(
        False, description="official FVD: drop the items to a multiple of 16 as compute_fvd.py does (a multiple of 16 is kept whole)"
    )
    bootstrap: int = Field(1000, ge=10, le=1_000_000, description="bootstrap resamples for the ObjMC interval")
    jackknife_groups: int = Field(20, ge=2, le=10_000, description="groups of items of the FID/FVD jackknife interval (one DxD eigenproblem each)")
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    user_study_dir: str | None = Field(None, description="folder of user-study cases (official demo format)")
    user_study_fit: Literal["masks", "pad", "center"] = Field(
        "masks",
        description="how a case's image becomes the suite's frame: 'masks' = the largest crop of the model's aspect that "
        "holds every mask of the case (padded when none can), 'pad' = the whole image letterboxed, 'center' = the centre crop",
    )
    items_per_task: int = Field(8, ge=1, le=10_000)


class RuntimeSettings(_Section):
    """Where the heavy work runs. ``ray_address`` (or RAY_ADDRESS) joins a cluster."""

    ray_address: str | None = None
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray (None = all)")
    task_num_cpus: float = Field(1.0, gt=0)
    task_num_gpus: float = Field(0.0, ge=0)
    task_memory_mb: int | None = Field(None, ge=1)
    max_retries: int = Field(2, ge=0, le=100, description="Ray retries of a task whose worker died")
    check_resources: bool = Field(
        True, description="at start-up, refuse task requests the Ray cluster cannot meet (off on an autoscaling cluster)"
    )


class TinyModelSettings(_Section):
    """Sizes of the embedded tiny SVD-shaped model (random weights from ``seed``; no download)."""

    unet_channels: tuple[int, ...] = Field((32, 64), description="UNet block widths (multiples of 32)")
    unet_layers_per_block: int = Field(1, ge=1)
    attention_heads: tuple[int, ...] = (2, 4)
    vae_channels: int = Field(32, ge=32, multiple_of=32)
    vae_downsample: Literal[4, 8] = Field(8, description="the VAE's spatial factor (real SVD: 8); 4 keeps small entities 4 latent pixels wide where 8 leaves 2")
    latent_channels: int = Field(4, ge=1, description="latent channels (real SVD: 4)")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    pretrained: bool = Field(
        False, description="load the shipped pre-fitted tiny base (model/tiny_base/, made by `draganything fit-base`); "
        "false = random weights from seed"
    )

    @field_validator("unet_channels")
    @classmethod
    def _groups(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) < 2 or any(c % 32 for c in v):
            raise ValueError("needs at least 2 widths, each a multiple of 32 (GroupNorm)")
        return v


class ModelSettings(_Section):
    """The base video model and the DragAnything controller (see model/ and docs/method.md)."""

    base_model_path: str | None = Field(
        None, description="local SVD img2vid directory in diffusers layout; None = the embedded tiny model"
    )
    tiny: TinyModelSettings = TinyModelSettings()
    num_frames: int = Field(8, ge=2, le=1024, description="L, frames generated / trained on")
    height: int = Field(64, ge=16, le=8192, multiple_of=8)
    width: int = Field(64, ge=16, le=8192, multiple_of=8)
    # entity representation
    entity_backbone: Literal["base-unet", "sd15-unet"] = "base-unet"
    entity_backbone_path: str | None = Field(None, description="local SD1.5 directory (diffusers layout) for sd15-unet")
    entity_timestep: int = Field(261, ge=0, le=999)
    entity_layer: int = Field(-1, description="index of the UNet up block whose output is pooled (-1 = last)")
    entity_channels: int = Field(160, ge=1, description="entity vector size after channel pooling")
    entity_ensemble: int = Field(1, ge=1, le=1000, description="noise draws averaged (official: 8)")
    gaussian_sigma_ratio: float = Field(0.4, gt=0, description="Gaussian sigma / entity radius")
    gaussian_support_ratio: float = Field(1.0, gt=0, description="Gaussian support / entity radius")
    # controller
    conditioning: Literal[CONDITIONINGS] = "entity+gaussian"
    encoder: Literal["dense", "fast", "strided", "official"] = Field(
        "fast", description="dense = official painted maps; fast = same output from per-entity kernels; strided = lighter; "
        "official = the official conditioning network exactly (fast path), so `draganything import-official` weights load"
    )
    encoder_channels: tuple[int, int, int, int] = (16, 32, 96, 256)
    frame_chunk: int = Field(
        4, ge=1, description="frames per chunk in the conditioning encoders (with gradients it bounds memory under train.gradient_checkpointing)"
    )
    dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="dtype the frozen base models are loaded in for preprocessing and training (generation: generate.dtype)"
    )
    fps: int = Field(
        7, ge=1, description="the frame rate SVD is micro-conditioned on, in training and generation; its time id is fps - 1 = 6, "
        "as in diffusers and the official training (generate.fps is only the mp4's frame rate)"
    )
    conditioning_scale: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _entity_layer_in_range(self) -> ModelSettings:
        depth, what = self.backbone_depth()
        if depth and not -depth <= self.entity_layer < depth:
            raise ValueError(
                f"model.entity_layer {self.entity_layer} is out of range: {what} has {depth} up blocks, so use "
                f"{-depth}..{depth - 1} (-1 = the last)"
            )
        return self

    def backbone_depth(self) -> tuple[int | None, str]:
        """Up blocks of the entity-feature backbone, where the config or its folder tells (else None)."""
        if self.entity_backbone == "base-unet" and self.base_model_path is None:
            return len(self.tiny.unet_channels), "the embedded tiny UNet"
        folder = self.base_model_path if self.entity_backbone == "base-unet" else self.entity_backbone_path
        if not folder:
            return None, ""
        try:
            unet = json.loads((Path(folder) / "unet" / "config.json").read_text())
            return len(unet.get("up_block_types") or unet["block_out_channels"]), f"the UNet in {folder}"
        except (OSError, ValueError, KeyError, TypeError):
            return None, ""  # loading it later says what is wrong with the folder


class BaseFitSettings(_Section):
    """Fit the embedded tiny VAE and base video UNet on the data before training the
    controller, so the CPU demo has a base model worth controlling. Never with a real SVD."""

    enabled: bool = False
    vae_steps: int = Field(300, ge=0, le=10_000_000)
    unet_steps: int = Field(300, ge=0, le=10_000_000)
    lr: float = Field(2e-3, gt=0, description="the base UNet's learning rate")
    vae_lr: float = Field(5e-3, gt=0, description="the VAE's learning rate")
    vae_crop: int = Field(64, ge=16, description="the VAE fits on random windows this size (cost independent of the frame size)")
    vae_preview: float = Field(
        0.0, ge=0, description="weight of a loss tying the first 3 latent channels to the frame's colours averaged over "
        "each latent pixel's patch: latents that move with the image, as SD's VAE latents do, so an entity looks the "
        "same wherever it goes (0 = off)"
    )
    batch_size: int = Field(4, ge=1, le=4096)
    split: str | None = Field(
        None, description="the split the base is fitted on (None = train.split); a split the controller never sees keeps "
        "the base from knowing the controller's training motions by heart, as SVD never saw VIPSeg"
    )
    cond_dropout: float = Field(0.1, ge=0, le=1, description="drop the image conditioning this often (for guidance)")
    cosine: bool = Field(False, description="decay both learning rates along a cosine to 5% over the fit (for long fits)")
    p_mean: float = Field(0.7, description="the base UNet's EDM noise levels, log sigma ~ N(p_mean, p_std^2) (SVD's); the controller's are train.p_mean/p_std")
    p_std: float = Field(1.6, gt=0)


class TrainSettings(_Section):
    """Controller training. ``steps`` is how many optimizer steps one ``train`` call runs."""

    dataset: str = "sample"
    split: str = "train"
    steps: int = Field(1000, ge=0, le=10_000_000)
    batch_size: int = Field(1, ge=1, le=4096)
    grad_accum: int = Field(1, ge=1, le=4096)
    lr: float = Field(1e-5, gt=0)
    warmup_steps: int = Field(0, ge=0, le=10_000_000)
    cosine: bool = Field(
        False, description="decay the learning rate along a cosine to 5% at the run's last step (after any warmup); a run continued "
        "to a later step stretches what is left of it"
    )
    weight_decay: float = Field(1e-2, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(10, ge=1)
    hflip: bool = Field(False, description="also train on every clip mirrored left-right (twice the motions to learn from)")
    windows: bool = Field(
        True, description="each clip is a random window of model.num_frames consecutive labelled frames (labels.frames.count may be longer)"
    )
    reverse: bool = Field(False, description="also play windows backwards (every motion also in the opposite direction)")
    loss_mask: bool = Field(True, description="MSE on entity pixels only (the paper's loss mask)")
    ema_decay: float | None = Field(None, gt=0, lt=1)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    controller_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="dtype of the controller's weights in the forward and backward passes; with bf16, AdamW steps "
        "fp32 master copies (model.training.MasterWeights), as an lr of 1e-5 is below bf16's resolution"
    )
    keep_last: int = Field(
        2, ge=1, description="checkpoints of a run that keep the full training state (optimizer, raw weights); older ones keep "
        "only the weights generation uses"
    )
    cond_noise_draws: int = Field(
        8, ge=1, description="noise-augmented first-frame latents cached per window start (preprocess stage); each step draws one"
    )
    gradient_checkpointing: bool = False
    max_entities: int = Field(8, ge=1, le=1000, description="entities drawn per clip (1..max, random)")
    p_mean: float = 0.7
    p_std: float = Field(1.6, gt=0)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    num_workers: int = Field(1, ge=1, le=1024, description="Ray Train workers (DDP); 1 = one process")
    use_gpu: bool = False
    cpus_per_worker: float | None = Field(
        None, gt=0, description="CPUs the training task (each Ray Train worker) reserves, and so its torch threads; None = runtime.task_num_cpus"
    )
    fit_base: BaseFitSettings = BaseFitSettings()


class DragSettings(_Section):
    """The interactive drag: the dashboard's Drag page and ``draganything drag``."""

    sam_checkpoint: str | None = Field(
        None, description="local SAM checkpoint (.pth) for click segmentation; None = the OpenCV GrabCut fallback"
    )
    sam_model_type: Literal["vit_b", "vit_l", "vit_h"] = Field("vit_b", description="must match the checkpoint")
    max_entities: int = Field(8, ge=1, le=1000, description="most entities one video may control (the camera counts as one)")
    max_image_side: int = Field(1024, ge=64, le=16384, description="larger images are downscaled so their longer side is this")
    crop_to_model_aspect: bool = Field(
        True, description="centre-crop images to the model's aspect ratio (else they are stretched to the model's size)"
    )
    executor: Literal["ray", "inline"] = Field("ray", description="where the page generates: a Ray task, or in the page's process")
    cases_dir: str | None = Field(
        None, description="where saved cases go; None = evaluate.user_study_dir, else <workdir>/user-study"
    )


class Config(_Section):
    profile: str = "custom"
    labels: LabelsSettings = LabelsSettings()
    generate: GenerateSettings = GenerateSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    model: ModelSettings = ModelSettings()
    drag: DragSettings = DragSettings()
    train: TrainSettings = TrainSettings()

    def digest(self) -> str:
        """Stable short hash of the values (not of the profile name)."""
        payload = self.model_dump(mode="json", exclude={"profile"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{dotted}': '{part}' is a value, not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    return key.strip(), load_value(raw, text)


def _close_key(loc: tuple) -> str:
    """`` (did you mean 'train.steps'?)`` for an unknown key close to a real one of its section."""
    import difflib

    model: Any = Config
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        model = getattr(field, "annotation", None)
        if field is None or not hasattr(model, "model_fields"):
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?)" if close else ""


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        if e["type"] == "extra_forbidden":
            lines.append(f"config key '{key}' is unknown{_close_key(e['loc'])} ({source})")
            continue
        got = e.get("input")
        if e["type"] == "value_error" and isinstance(got, dict):  # a check across a section's keys: the message names them
            lines.append(f"{e['msg'].removeprefix('Value error, ')} ({source})")
            continue
        lines.append(f"config key '{key}': {e['msg']}; got {got!r} ({source})")
    return ConfigError("; ".join(lines))


def profile_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        return p
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(x.stem for x in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"config profile '{name_or_path}' not found in {CONFIG_DIR}; allowed: {', '.join(known)}")
    return candidate


def load_config(name_or_path: str = "tiny", overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load a profile, apply ``key.sub=value`` overrides, validate everything."""
    path = profile_path(name_or_path)
    tree = load_file(path) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    tree.setdefault("profile", path.stem)
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    given: dict[str, Any] = {}
    for key, value in items:
        if key in given:
            raise ConfigError(f"--set {key} is given twice ({key}={given[key]!r} and {key}={value!r}); give each key once")
        given[key] = value
    for key, value in items:
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise _explain(err, str(path)) from None
