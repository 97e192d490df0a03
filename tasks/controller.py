"""Videos from a trained controller: a ``checkpoints`` row -> a generator for suite items.

The row's config holds the model settings it was trained with (base model path
included); the controller weights are ``<path>/controlnet`` in diffusers layout.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import torch

from core.config import Config, ModelSettings
from core.tables import Workdir
from model.official import OFFICIAL_TIME_IDS
from model.pipeline import place_pipeline
from model.tiny import DTYPES
from tasks.suites import SuiteItem


def checkpoint_model_settings(checkpoint: dict) -> ModelSettings:
    cfg = json.loads(checkpoint["config"])
    return ModelSettings.model_validate(cfg["model"])


class ControllerGenerator:
    """``DragAnythingPipeline`` with a trained controller, loaded once and reused for every item."""

    def __init__(self, pipe, model: ModelSettings, gen_settings):
        self.pipe, self.model, self.gen = pipe, model, gen_settings

    @classmethod
    def from_checkpoint(cls, wd: Workdir, checkpoint: dict, cfg: Config) -> ControllerGenerator:
        from model.pipeline import build_pipeline

        model = checkpoint_model_settings(checkpoint)
        # loaded in generate.dtype (a real base never sits in memory in fp32 first), with the entity extractor
        # exactly as in training (backbone, timestep, layer, ensemble)
        pipe = build_pipeline(model, controlnet_path=str(wd.local_dir(checkpoint["path"], only="controlnet") / "controlnet"),
                              torch_dtype=DTYPES[cfg.generate.dtype] if model.base_model_path else None)
        return cls(place_pipeline(pipe, cfg.generate), model, cfg.generate)

    def __call__(self, item: SuiteItem, seed: int, on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
        """The video ``(T, H, W, 3)`` uint8; ``on_step(done, total)`` after each denoising step."""
        m, g = self.model, self.gen
        # A suite's paths are timed (point k is where the entity is in frame k) and every
        # generator makes one frame per point, so ObjMC compares the same frames for every
        # checkpoint and reference. SVD runs at any length; resampling the path to
        # model.num_frames would change its speed and score frame k against another time.
        paths = list(item.trajectories)
        callback = None
        if on_step is not None:
            def callback(pipe, i, t, kwargs):
                on_step(i + 1, g.num_inference_steps)
                return {}

            on_step(0, g.num_inference_steps)
        with torch.no_grad():
            out = self.pipe(
                image=item.image,
                masks=item.masks,
                trajectories=paths,
                radii=item.radii,
                height=m.height,
                width=m.width,
                num_frames=item.trajectories.shape[1],
                num_inference_steps=g.num_inference_steps,
                min_guidance_scale=g.min_guidance_scale,
                max_guidance_scale=g.max_guidance_scale,
                fps=m.fps,
                motion_bucket_id=g.motion_bucket_id,
                noise_aug_strength=g.noise_aug_strength,
                added_time_ids=OFFICIAL_TIME_IDS if g.time_ids == "official" else None,
                conditioning_scale=m.conditioning_scale,
                entity_path="dense" if m.encoder == "dense" else "fast",  # model.encoder, as in training
                gaussian_sigma_ratio=m.gaussian_sigma_ratio,
                gaussian_support_ratio=m.gaussian_support_ratio,
                frame_chunk=m.frame_chunk,
                decode_chunk_size=g.decode_chunk_size,
                seed=int(seed),
                output_type="np",
                callback_on_step_end=callback,
            ).frames[0]
        # At the model's size, as generated: ObjMC tracks a video where it was made and maps
        # the points to the evaluation size (as the official protocol does with SVD's 320x576).
        # Upscaled pixels are blurred pixels, on which a tracker loses what it could follow.
        return (np.clip(np.asarray(out), 0, 1) * 255).round().astype(np.uint8)
