"""Videos from a trained controller: a ``checkpoints`` row -> a generator for suite items.

The row's config holds the model settings it was trained with (base model path
included); the controller weights are ``<path>/controlnet`` in diffusers layout.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from core.config import Config, ModelSettings
from core.tables import Workdir
from tasks.suites import SuiteItem

def checkpoint_model_settings(checkpoint: dict) -> ModelSettings:
    cfg = json.loads(checkpoint["config"])
    return ModelSettings.model_validate(cfg["model"])


class ControllerGenerator:
    """``DragAnythingPipeline`` with a trained controller, loaded once and reused for every item."""

    def __init__(self, pipe, model: ModelSettings, gen_settings):
        self.pipe, self.model, self.gen = pipe, model, gen_settings

    @classmethod
    def from_checkpoint(cls, workdir: Workdir, checkpoint: dict, cfg: Config) -> "ControllerGenerator":
        from model.pipeline import build_pipeline

        model = checkpoint_model_settings(checkpoint)
        from model.entity_features import build_extractor

        pipe = build_pipeline(model, controlnet_path=workdir.local_path(checkpoint["path"], "controlnet"))
        # Entity vectors exactly as in training (backbone, timestep, layer, ensemble).
        pipe.set_entity_extractor(build_extractor(model, base_parts=dict(unet=pipe.unet, vae=pipe.vae)))
        return cls(pipe, model, cfg.generate)

    def __call__(self, item: SuiteItem, seed: int) -> np.ndarray:
        m, g = self.model, self.gen
        # A suite's paths are timed (point k is where the entity is in frame k) and every
        # generator makes one frame per point, so ObjMC compares the same frames for every
        # checkpoint and reference. SVD runs at any length; resampling the path to
        # model.num_frames would change its speed and score frame k against another time.
        paths = list(item.trajectories)
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
                fps=g.fps,
                motion_bucket_id=g.motion_bucket_id,
                noise_aug_strength=g.noise_aug_strength,
                conditioning_scale=m.conditioning_scale,
                entity_path=g.entity_path,
                gaussian_sigma_ratio=m.gaussian_sigma_ratio,
                gaussian_support_ratio=m.gaussian_support_ratio,
                frame_chunk=m.frame_chunk,
                seed=int(seed),
                output_type="np",
            ).frames[0]
        # At the model's size, as generated: ObjMC tracks a video where it was made and maps
        # the points to the evaluation size (as the official protocol does with SVD's 320x576).
        # Upscaled pixels are blurred pixels, on which a tracker loses what it could follow.
        return (np.clip(np.asarray(out), 0, 1) * 255).round().astype(np.uint8)
