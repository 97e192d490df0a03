"""``DragAnythingPipeline``: Stable Video Diffusion img2vid steered by entity trajectories.

Inputs: a first frame, one mask per entity (a mask covering the whole frame moves the
camera) and one path per entity: one point per frame (kept as given, its timing
included), or any other number of points (a drag: PCHIP-interpolated to one point per
frame at constant speed). Every knob the official pipeline hard-codes (fps, motion bucket, noise
augmentation, guidance ramp, steps, seed) is an argument.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import StableVideoDiffusionPipeline
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipelineOutput,
    _append_dims,
)
from diffusers.utils.torch_utils import randn_tensor

from core.geometry import rescale

from .controlnet import DragAnythingControlNetModel, EntityInputs
from .entity_features import EntityFeatureExtractor
from .incircle import inscribed_radii
from .maps import paint_order, path_for_frames, reads_entity_vectors, render_conditions
from .tiny import DTYPES, vae_factor
from .unet_control import controlled_prediction
from .vae_io import vae_encode


class _EmptyFp32ListFilter(logging.Filter):
    """diffusers warns "modules ... that should be kept in float32: []" on every ``.to(dtype)`` of a
    model whose list of such modules is empty: there is nothing to keep, so the line is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


logging.getLogger("diffusers.models.modeling_utils").addFilter(_EmptyFp32ListFilter())


class DragAnythingPipeline(StableVideoDiffusionPipeline):
    r"""
    [`StableVideoDiffusionPipeline`] plus a [`DragAnythingControlNetModel`] whose residuals are added to the
    frozen UNet at every denoising step (to both halves of the classifier-free-guidance batch).

    Args:
        vae, image_encoder, unet, scheduler, feature_extractor: as for SVD img2vid.
        controlnet ([`DragAnythingControlNetModel`]): the trained controller.
    """

    # The controller is not in the chain, as in diffusers' ControlNet pipelines: it runs beside the UNet at every
    # step, and chained, the UNet's hook would send it back to the CPU at every step, freeing nothing while the
    # UNet runs. Out of the chain it gets its own hook: on the GPU from its first call to the end of the call.
    model_cpu_offload_seq = "image_encoder->unet->vae"

    def __init__(self, vae, image_encoder, unet, scheduler, feature_extractor, controlnet: DragAnythingControlNetModel):
        super().__init__(vae, image_encoder, unet, scheduler, feature_extractor)
        self.register_modules(controlnet=controlnet)
        self.entity_extractor: EntityFeatureExtractor | None = None

    def set_entity_extractor(self, extractor: EntityFeatureExtractor) -> None:
        """Use this extractor (e.g. an SD1.5 backbone) for entity vectors instead of the base UNet."""
        self.entity_extractor = extractor

    # ------------------------------------------------------------------------------------
    def prepare_entities(
        self,
        masks: np.ndarray | torch.Tensor,
        trajectories: Sequence[np.ndarray | Sequence],
        num_frames: int,
        height: int,
        width: int,
        radii: Sequence[float] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks ``(N, Hm, Wm)`` + paths in mask pixels -> masks at ``(height, width)``, centres ``(T, N, 2)``,
        radii ``(N,)`` at ``(height, width)`` and the paint order (large entities first)."""
        m = torch.as_tensor(np.asarray(masks)).bool()
        if m.dim() == 2:
            m = m[None]
        if len(trajectories) != m.shape[0]:
            raise ValueError(f"got {m.shape[0]} entity masks but {len(trajectories)} trajectories; give one path per entity")
        hm, wm = m.shape[-2:]
        sx, sy = width / wm, height / hm
        m = F.interpolate(m[:, None].float(), size=(height, width), mode="nearest")[:, 0].bool()
        paths = [path_for_frames(p, num_frames) for p in trajectories]  # timed paths as given, drags interpolated
        centers = torch.from_numpy(np.stack(paths, 1))  # (T, N, 2) in mask pixels
        centers = rescale(centers, sx, sy)
        if radii is None:
            r = inscribed_radii(m).float().cpu()
        else:
            r = torch.as_tensor(radii, dtype=torch.float32) * float(np.sqrt(sx * sy))
        order = paint_order(r)
        return m[order], centers[:, order], r[order], order

    @torch.no_grad()
    def __call__(
        self,
        image: PIL.Image.Image | np.ndarray | torch.Tensor,
        masks: np.ndarray | torch.Tensor,
        trajectories: Sequence[np.ndarray | Sequence],
        radii: Sequence[float] | None = None,
        entity_vectors: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        height: int = 320,
        width: int = 576,
        num_frames: int | None = None,
        num_inference_steps: int = 25,
        min_guidance_scale: float = 1.0,
        max_guidance_scale: float = 3.0,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        added_time_ids: Sequence[float] | None = None,
        conditioning_scale: float = 1.0,
        entity_path: str = "fast",
        gaussian_sigma_ratio: float = 0.4,
        gaussian_support_ratio: float = 1.0,
        frame_chunk: int | None = 4,
        decode_chunk_size: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        return_dict: bool = True,
    ):
        """Generate one video.

        Args:
            image: the first frame (PIL, ``(H, W, 3)`` uint8, or ``(3, H, W)`` float in [0, 1]).
            masks: ``(N, Hm, Wm)`` bool, one per entity, at the resolution the paths are given in.
            trajectories: N paths, each ``(K, 2)`` points ``(x, y)`` in mask pixels (K >= 1); K == num_frames
                is kept as given (point k in frame k), other K are interpolated.
            radii: per-entity radius in mask pixels; default: each mask's inscribed circle.
            entity_vectors: ``(N, C)`` precomputed vectors; default: computed from the image and masks.
            boxes: ``(N, 4)`` first-frame boxes at ``(height, width)`` for the 'box' baseline.
            fps: the frame rate SVD is micro-conditioned on; its time id is ``fps - 1`` (diffusers' convention:
                the default 7 gives 6, what SVD and the controller's training use). Not the video's frame rate.
            added_time_ids: the three micro-conditioning ids instead of ``(fps - 1, motion_bucket_id, noise_aug_strength)``
                (``model.official.OFFICIAL_TIME_IDS``: what the official pipeline passes); the noise added to the
                first frame is still ``noise_aug_strength``.
            entity_path: 'fast' (per-entity kernels) or 'dense' (official painted maps); same result.
            decode_chunk_size: frames the VAE decodes at a time (default: all); fewer need less memory.
            seed: shorthand for ``generator=torch.Generator().manual_seed(seed)``.
            callback_on_step_end: as in diffusers' pipelines: ``callback(pipe, step, timestep, callback_kwargs)``
                after each denoising step, ``callback_kwargs`` holding ``callback_on_step_end_tensor_inputs``;
                a returned ``{"latents": ...}`` replaces the latents.
        Returns:
            ``StableVideoDiffusionPipelineOutput`` with ``frames``: ``(1, T, H, W, 3)`` float in [0, 1] for 'np'.
        """
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs {bad} are not among {self._callback_tensor_inputs}")
        num_frames = num_frames or self.unet.config.num_frames
        if generator is None and seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(seed)
        device = self._execution_device
        self._guidance_scale = max_guidance_scale  # > 1 switches classifier-free guidance on

        # 1. the first frame, as a PIL image and as a [0, 1] tensor at the output size
        pil = _to_pil(image).convert("RGB").resize((width, height), PIL.Image.BICUBIC)
        pixels = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float()[None] / 255.0

        # 2. entities: masks, per-frame centres, radii (large first, so small ones are painted on top)
        ent_masks, centers, ent_radii, order = self.prepare_entities(masks, trajectories, num_frames, height, width, radii)
        centers, ent_radii = centers.to(device), ent_radii.to(device)

        # 3. entity vectors, if this controller reads them
        vectors = None
        if reads_entity_vectors(self.controlnet.config.conditioning):
            if entity_vectors is not None:
                vectors = torch.as_tensor(entity_vectors, dtype=torch.float32)[order]
            else:
                if self.entity_extractor is None:
                    raise ValueError(
                        f"this controller reads entity vectors ({self.controlnet.config.entity_channels} channels): pass "
                        "entity_vectors, or call set_entity_extractor with the extractor it was trained with "
                        "(model.entity_features.build_extractor for its model settings)"
                    )
                vectors = self.entity_extractor.extract(pixels[0] * 2 - 1, ent_masks)
            vectors = vectors.to(device, torch.float32)

        # 4. SVD's own conditioning: CLIP image embedding, noise-augmented image latent, micro-conditioning
        image_embeddings = self._encode_image(pil, device, 1, self.do_classifier_free_guidance)
        noisy_image = pixels.to(device) * 2 - 1
        noisy_image = noisy_image + noise_aug_strength * randn_tensor(
            noisy_image.shape, generator=generator, device=device, dtype=noisy_image.dtype
        )
        image_latents = vae_encode(self.vae, noisy_image).to(device, image_embeddings.dtype)
        if self.do_classifier_free_guidance:
            image_latents = torch.cat([torch.zeros_like(image_latents), image_latents])
        image_latents = image_latents[:, None].repeat(1, num_frames, 1, 1, 1)
        ids = (fps - 1, motion_bucket_id, noise_aug_strength) if added_time_ids is None else tuple(added_time_ids)
        added_time_ids = self._get_add_time_ids(*ids, image_embeddings.dtype, 1, 1, self.do_classifier_free_guidance).to(device)

        # 5. the control maps (pixel scale, on the device), for both halves of the guidance batch
        maps = render_conditions(
            self.controlnet.config.conditioning,
            centers,
            ent_radii,
            height,
            width,
            vectors=vectors,
            boxes=None if boxes is None else torch.as_tensor(boxes)[order],
            sigma_ratio=gaussian_sigma_ratio,
            support_ratio=gaussian_support_ratio,
            dense_entity=entity_path == "dense",
        )
        copies = 2 if self.do_classifier_free_guidance else 1
        cdtype = self.controlnet.dtype
        conditions = {k: v[None].to(device, cdtype) for k, v in maps.items()}
        entities = None
        if vectors is not None and entity_path != "dense":
            entities = [EntityInputs(vectors.to(cdtype), centers, ent_radii)]
        # the encoders' output is the same at every step and in both guidance halves: computed once per video
        encoded = self.encode_controls(conditions, entities, height, width, num_frames, frame_chunk)
        encoded = None if encoded is None else encoded.repeat(copies, 1, 1, 1)
        conditions = {k: v.expand(copies, -1, -1, -1, -1) for k, v in conditions.items()}  # read only without ``encoded``
        entities = None if entities is None else entities * copies

        # 6. noise and schedule
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        latents = self.prepare_latents(
            1, num_frames, self.unet.config.in_channels, height, width, image_embeddings.dtype, device, generator, latents
        )
        guidance = torch.linspace(min_guidance_scale, max_guidance_scale, num_frames, device=device)[None]
        guidance = _append_dims(guidance.to(latents.dtype), latents.ndim)
        self._guidance_scale = guidance
        self._num_timesteps = len(timesteps)

        # 7. denoise with control
        with self.progress_bar(total=len(timesteps)) as progress:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([latents] * copies)
                model_input = self.scheduler.scale_model_input(model_input, t)
                noise_pred = controlled_prediction(
                    self.unet,
                    self.controlnet,
                    model_input,
                    image_latents,
                    image_embeddings,
                    added_time_ids,
                    t,
                    conditions=conditions,
                    entities=entities,
                    conditioning_scale=conditioning_scale,
                    frame_chunk=frame_chunk,
                    encoded_conditions=encoded,
                )
                if self.do_classifier_free_guidance:
                    uncond, cond = noise_pred.chunk(2)
                    noise_pred = uncond + self.guidance_scale * (cond - uncond)
                latents = self.scheduler.step(noise_pred.to(latents.dtype), t, latents).prev_sample
                if callback_on_step_end is not None:
                    here = locals()
                    out = callback_on_step_end(self, i, t, {k: here[k] for k in callback_on_step_end_tensor_inputs})
                    latents = (out or {}).pop("latents", latents)
                progress.update()

        # 8. decode, ``decode_chunk_size`` frames at a time
        if output_type == "latent":
            frames = latents
        else:
            frames = self.decode_latents(latents.to(self.vae.dtype), num_frames, decode_chunk_size or num_frames)
            frames = self.video_processor.postprocess_video(video=frames, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return frames
        return StableVideoDiffusionPipelineOutput(frames=frames)

    def encode_controls(self, conditions, entities, height: int, width: int, num_frames: int, frame_chunk) -> torch.Tensor | None:
        """The conditioning encoders' summed output for one video, ``(T, C0, h, w)`` (None without encoders)."""
        hook = getattr(self.controlnet, "_hf_hook", None)
        if hook is not None:  # under model offload: this is no ``forward`` call, so the hook is called here
            hook.pre_forward(self.controlnet)
        return self.controlnet.encode_conditions(conditions, entities, height, width, num_frames, frame_chunk)


def generation_device(gen_settings) -> torch.device:
    """The device ``gen_settings.device`` names (the config's ``generate`` section, or any object with
    ``device``, ``dtype`` and ``cpu_offload``); ``auto`` = the task's GPU when it has one (Ray sets
    ``CUDA_VISIBLE_DEVICES`` to the task's GPUs), else the CPU."""
    if gen_settings.device == "cuda" or (gen_settings.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("generate.device is 'cuda' but this process sees no GPU; give the task one "
                               "(runtime.task_num_gpus: 1) or set generate.device=auto")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def place_pipeline(pipe, gen_settings):
    """Put a built pipeline and its entity extractor on ``generate.device`` in ``generate.dtype``,
    or behind diffusers' model CPU offload (``generate.cpu_offload``: each model on the GPU only while it runs)."""
    device, dtype = generation_device(gen_settings), DTYPES[gen_settings.dtype]
    for part in pipe.components.values():  # only what is not in dtype yet: diffusers warns on every cast
        if isinstance(part, torch.nn.Module) and part.dtype != dtype:
            part.to(dtype=dtype)
    extractor = pipe.entity_extractor
    if extractor is not None and extractor.unet is not pipe.unet:  # its own backbone (SD1.5): placed whole
        extractor.unet.to(device, dtype)
        extractor.vae.to(device, dtype)
        if extractor.text_embeddings is not None:
            extractor.text_embeddings = extractor.text_embeddings.to(device, dtype)
    if gen_settings.cpu_offload and device.type == "cuda":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def _to_pil(image) -> PIL.Image.Image:
    if isinstance(image, PIL.Image.Image):
        return image
    arr = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    return PIL.Image.fromarray(arr)


def build_controlnet(settings, unet, vae, seed: int = 0) -> DragAnythingControlNetModel:
    """``vae``: the base's VAE, or its spatial factor (an int) when the VAE itself is not loaded."""
    return _fresh_controlnet(settings, unet, vae if isinstance(vae, int) else vae_factor(vae.config), seed)


def _fresh_controlnet(settings, unet, pixel_scale: int, seed: int) -> DragAnythingControlNetModel:
    """A fresh controller for ``ModelSettings`` (copy of the UNet encoder, zero-initialised outputs).

    The conditioning encoders' random initialisation is drawn from ``seed``, not from whatever
    the process's global RNG holds (a reused Ray worker), so the same run starts the same way.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DragAnythingControlNetModel.from_unet(
            unet,
            conditioning=settings.conditioning,
            entity_channels=settings.entity_channels,
            encoder_block_out_channels=tuple(settings.encoder_channels),
            encoder_first_stride=2 if settings.encoder == "strided" else 1,
            pixel_scale=pixel_scale,
            encoder_layout="official" if settings.encoder == "official" else "project",
        )


def build_pipeline(settings, controlnet_path: str | None = None, base_parts: dict | None = None, torch_dtype=None) -> DragAnythingPipeline:
    """The pipeline for ``ModelSettings``: base model (real or tiny) + a controller (saved, or fresh), and the
    entity extractor the settings name (``build_extractor``: backbone, timestep, layer, ensemble as in training)."""
    from .entity_features import build_extractor
    from .tiny import base_components, require_layout, tiny_sizes

    parts = base_parts or base_components(settings.base_model_path, tiny_sizes(settings), torch_dtype=torch_dtype)
    if controlnet_path:
        p = require_layout(
            controlnet_path,
            ("config.json",),
            "a directory written by DragAnythingControlNetModel.save_pretrained (config.json + diffusion_pytorch_model.safetensors)",
        )
        kw = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
        controlnet = DragAnythingControlNetModel.from_pretrained(p, local_files_only=True, **kw)
    else:
        controlnet = build_controlnet(settings, parts["unet"], parts["vae"])
    pipe = DragAnythingPipeline(controlnet=controlnet.eval(), **parts)
    pipe.set_progress_bar_config(disable=True)
    if reads_entity_vectors(controlnet.config.conditioning):
        pipe.set_entity_extractor(build_extractor(settings, base_parts=dict(unet=parts["unet"], vae=parts["vae"])))
    return pipe
