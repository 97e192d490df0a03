"""Entity vectors: one-step diffusion features of the first frame, averaged inside each entity's mask.

0. With ``size`` (the model's height x width, as ``build_extractor`` sets it) the frame and
   masks are first brought to that size the way the pipeline does (PIL bicubic; nearest
   for masks), so training vectors and generation vectors see the same pixels.
1. Encode the first frame with the VAE, noise its latent to timestep t with the forward
   process (x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps), ``ensemble_size`` noise draws.
   An SVD UNet also gets the image latent as its condition, unscaled (``mode()`` without
   ``scaling_factor``), as SVD's own pipeline encodes it (``_encode_vae_image``).
2. Run the UNet once; a forward hook on ``unet.up_blocks[layer]`` captures its output
   (the DIFT recipe; no UNet code is copied).
3. Average the feature map over each entity's mask (area-weighted at the feature's
   resolution), then average-pool the C channels down to ``pooled_channels``.

The backbone is either the base SVD UNet (``UNetSpatioTemporalConditionModel``, run as a
one-frame video with a zero image embedding, the analogue of the official empty prompt)
or an SD1.5-family ``UNet2DConditionModel`` with the empty-prompt text embedding, as the
official code did.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .maps import downsample_mask
from .tiny import SD15_LAYOUT, require_layout, weights_fingerprint
from .vae_io import vae_encode

# Bumped when the same weights give different vectors (v2: SVD's condition unscaled, size in the id;
# v3: an SVD backbone is micro-conditioned on fps id 6, as in training and generation).
EXTRACTOR_VERSION = 3


class EntityFeatureExtractor:
    """Computes entity vectors with a frozen UNet + VAE. Build once, call ``extract`` per image.

    Args:
        unet: ``UNetSpatioTemporalConditionModel`` (base SVD) or ``UNet2DConditionModel`` (SD1.5).
        vae: the matching VAE (its ``encode`` must accept ``(1, 3, H, W)`` in [-1, 1]).
        backbone: a short name written into the extractor id (``base-unet`` / ``sd15-unet``).
        timestep: t in [0, 1000) of the DDPM forward process (official: 261).
        layer: index of the up block whose output is pooled (official: the last, ``-1`` or 3 for SD1.5).
        pooled_channels: the vector size after average-pooling channels (official: 320 -> 160).
        ensemble_size: noise draws averaged (official: 8).
        text_embeddings: ``(1, L, D)`` empty-prompt embedding for an SD1.5 UNet.
        size: ``(height, width)`` the vectors are computed at (the model's); None: as given.
    """

    def __init__(
        self,
        unet,
        vae,
        backbone: str = "base-unet",
        timestep: int = 261,
        layer: int = -1,
        pooled_channels: int = 160,
        ensemble_size: int = 1,
        text_embeddings: torch.Tensor | None = None,
        seed: int = 0,
        size: tuple[int, int] | None = None,
    ):
        self.unet, self.vae = unet, vae
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.backbone, self.timestep, self.pooled_channels = backbone, int(timestep), int(pooled_channels)
        self.layer = layer if layer >= 0 else len(unet.up_blocks) + layer
        if not 0 <= self.layer < len(unet.up_blocks):
            raise ValueError(f"layer {layer} is out of range: the UNet has {len(unet.up_blocks)} up blocks")
        self.ensemble_size, self.seed = int(ensemble_size), seed
        self.text_embeddings = text_embeddings
        self.is_video_unet = "SpatioTemporal" in type(unet).__name__
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2  # SD / SVD "scaled_linear"
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)
        self.fingerprint = weights_fingerprint(unet)

    @property
    def extractor_id(self) -> str:
        """Identifies backbone + weights + timestep + layer + size: vectors with different ids never mix."""
        at = "" if self.size is None else f"/{self.size[0]}x{self.size[1]}"
        return f"{self.backbone}@{self.fingerprint}/t{self.timestep}/up{self.layer}/c{self.pooled_channels}/e{self.ensemble_size}{at}/v{EXTRACTOR_VERSION}"

    @property
    def layer_name(self) -> str:
        return f"up_blocks.{self.layer}"

    # ----------------------------------------------------------------------------------
    def _unet_inputs(self, latents: torch.Tensor, cond: torch.Tensor):
        """UNet call arguments for noisy latents ``(E, 4, h, w)`` at the configured timestep;
        ``cond`` is the unscaled image latent an SVD UNet is conditioned on."""
        e = latents.shape[0]
        a = self.alphas_cumprod[self.timestep]
        dtype, device = latents.dtype, latents.device
        if self.is_video_unet:
            # SVD is an EDM model: sigma = sqrt((1 - a) / a), c_in * (x0 + sigma eps) == x_t, c_noise = log(sigma) / 4
            sigma = float(((1 - a) / a).sqrt())
            cond = cond.expand(e, -1, -1, -1)  # the image latent SVD concatenates to its input
            sample = torch.cat([latents, cond], 1)[:, None]  # a one-frame video
            cfg = self.unet.config
            hidden = torch.zeros(e, 1, cfg.cross_attention_dim if isinstance(cfg.cross_attention_dim, int) else cfg.cross_attention_dim[0], dtype=dtype, device=device)
            ids = torch.tensor([[6.0, 127.0, 0.0]], dtype=dtype, device=device).expand(e, -1)  # fps id 6 (fps 7), as training
            return (sample, torch.tensor(0.25 * np.log(sigma), dtype=dtype, device=device)), dict(
                encoder_hidden_states=hidden, added_time_ids=ids
            )
        hidden = self.text_embeddings
        if hidden is None:
            hidden = torch.zeros(1, 77, self.unet.config.cross_attention_dim, dtype=dtype, device=device)
        return (latents, torch.tensor(self.timestep, device=device)), dict(
            encoder_hidden_states=hidden.to(device, dtype).expand(e, -1, -1)
        )

    @torch.no_grad()
    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        """``(3, H, W)`` in [-1, 1] -> the hooked feature map ``(C, h', w')``, averaged over the ensemble."""
        dtype = next(self.unet.parameters()).dtype
        # (the latent's device, not the UNet's parameters': with model offload they sit on the CPU until called)
        latent = vae_encode(self.vae, image[None])
        device = latent.device
        cond = latent.to(dtype)  # SVD's pipeline conditions on mode() without the scaling factor
        x0 = (latent * self.vae.config.scaling_factor).to(dtype)  # the space the UNet denoises in
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        eps = torch.randn((self.ensemble_size, *x0.shape[1:]), generator=g, device="cpu").to(device, dtype)
        a = float(self.alphas_cumprod[self.timestep])
        xt = a**0.5 * x0 + (1 - a) ** 0.5 * eps

        captured: list[torch.Tensor] = []
        hook = self.unet.up_blocks[self.layer].register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            args, kwargs = self._unet_inputs(xt, cond)
            self.unet(*args, **kwargs)
        finally:
            hook.remove()
        return captured[0].float().mean(0)

    @torch.no_grad()
    def extract(self, image: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> torch.Tensor:
        """One vector per entity ``(N, pooled_channels)``.

        image: ``(H, W, 3)`` uint8 or ``(3, H, W)`` float in [-1, 1]; masks: ``(N, H, W)`` bool.
        With ``size``, a uint8 image of another size is first resized as the pipeline resizes
        its input (``to_model_size``). The image is then resized to a multiple of 8 if needed;
        masks follow.
        """
        if self.size is not None and isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape[:2] != self.size:
            image, masks = to_model_size(image, masks, *self.size)
        img = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else torch.as_tensor(image)
        if img.dtype == torch.uint8:
            img = img.permute(2, 0, 1).float() / 127.5 - 1
        h, w = img.shape[-2:]
        h8, w8 = max(8, h // 8 * 8), max(8, w // 8 * 8)
        if (h8, w8) != (h, w):
            img = F.interpolate(img[None], size=(h8, w8), mode="bilinear", align_corners=False)[0]
        feats = self.feature_map(img)  # (C, h', w')
        masks = torch.as_tensor(masks, device=feats.device)
        m = downsample_mask(masks, *feats.shape[-2:])  # (N, h', w') area fractions
        weight = m.sum((1, 2))
        vec = torch.einsum("chw,nhw->nc", feats, m) / weight.clamp(min=1e-8)[:, None]
        # an entity smaller than one feature cell: take the cell under its mask's centroid
        for k in torch.nonzero(weight <= 1e-8).flatten().tolist():
            ys, xs = torch.nonzero(masks[k], as_tuple=True)
            if len(ys) == 0:
                raise ValueError(f"entity mask {k} is empty")
            cy = int(ys.float().mean() * feats.shape[1] / masks.shape[1])
            cx = int(xs.float().mean() * feats.shape[2] / masks.shape[2])
            vec[k] = feats[:, cy, cx]
        if self.pooled_channels != vec.shape[1]:
            vec = F.adaptive_avg_pool1d(vec[:, None], self.pooled_channels)[:, 0]
        return vec


def to_model_size(image: np.ndarray, masks, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A uint8 ``(H, W, 3)`` frame and ``(N, H, W)`` masks at the model's size, as ``DragAnythingPipeline``
    brings its inputs there: PIL bicubic for the frame (-> ``(3, h, w)`` in [-1, 1]), nearest for masks."""
    pil = PIL.Image.fromarray(np.ascontiguousarray(image)).convert("RGB").resize((width, height), PIL.Image.BICUBIC)
    pixels = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255.0 * 2 - 1
    m = torch.as_tensor(np.asarray(masks)).bool()
    m = F.interpolate(m[:, None].float(), size=(height, width), mode="nearest")[:, 0].bool()
    return pixels, m


def load_sd15_backbone(path: str, device: str | torch.device = "cpu", torch_dtype=None):
    """UNet, VAE and empty-prompt embedding of a local SD1.5-family directory (diffusers layout)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    p = require_layout(path, ("unet", "vae", "text_encoder", "tokenizer"), SD15_LAYOUT)
    kw = dict(local_files_only=True)
    if torch_dtype is not None:
        kw["torch_dtype"] = torch_dtype
    unet = UNet2DConditionModel.from_pretrained(p / "unet", **kw).to(device).eval()
    vae = AutoencoderKL.from_pretrained(p / "vae", **kw).to(device).eval()
    tok = CLIPTokenizer.from_pretrained(p / "tokenizer", local_files_only=True)
    text = CLIPTextModel.from_pretrained(p / "text_encoder", **kw).to(device).eval()
    with torch.no_grad():
        ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
        empty = text(ids.to(device))[0]
    return unet, vae, empty


def build_extractor(settings, base_parts: dict | None = None, device="cpu") -> EntityFeatureExtractor:
    """The extractor a ``ModelSettings`` asks for; ``base_parts`` reuses already-loaded base components."""
    from .tiny import base_components, tiny_sizes

    common = dict(
        timestep=settings.entity_timestep,
        layer=settings.entity_layer,
        pooled_channels=settings.entity_channels,
        ensemble_size=settings.entity_ensemble,
        size=(settings.height, settings.width),
    )
    if settings.entity_backbone == "sd15-unet":
        if not settings.entity_backbone_path:
            raise ValueError("model.entity_backbone is 'sd15-unet' but model.entity_backbone_path is not set")
        unet, vae, empty = load_sd15_backbone(settings.entity_backbone_path, device)
        return EntityFeatureExtractor(unet, vae, backbone="sd15-unet", text_embeddings=empty, **common)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(getattr(settings, "dtype", "fp32")) if settings.base_model_path else None
    parts = base_parts or base_components(settings.base_model_path, tiny_sizes(settings), torch_dtype=dtype)
    return EntityFeatureExtractor(parts["unet"].to(device), parts["vae"].to(device), backbone="base-unet", **common)
