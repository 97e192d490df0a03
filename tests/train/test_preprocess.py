"""The preprocess stage: each clip encoded once, only what is missing; training reads caches and loads only the base UNet."""

import shutil

import numpy as np
import torch
from diffusers import StableVideoDiffusionPipeline

from core.config import load_config
from core.media import load_cached_clip, resize_clip
from core.tables import Workdir
from model import training as T
from model.tiny import build_tiny_svd, tiny_sizes
from tasks.preprocess import cache_file, clip_specs, encode_clips, missing, read_cache
from tasks.train import load_clips, preprocess_in_process, run_training

from .conftest import FAST


def _copy(labelled, tmp_path) -> str:
    dst = tmp_path / "w"
    shutil.copytree(labelled, dst)
    return str(dst)


def test_each_clip_is_encoded_once_and_only_missing_files_are_computed(labelled, tmp_path):
    workdir = _copy(labelled, tmp_path)
    wd = Workdir(workdir)
    cfg = load_config("tiny", [*FAST, "train.hflip=true"])
    todo = missing(wd, cfg)
    assert len(todo) == 3
    first = encode_clips(workdir, cfg, todo)
    assert len(first["encoded"]) == 6  # each clip and its mirror image, once
    assert missing(wd, cfg) == [] and encode_clips(workdir, cfg, todo)["encoded"] == []
    gone = first["encoded"][1]
    (tmp_path / "w" / gone).unlink()
    assert encode_clips(workdir, cfg, todo)["encoded"] == [gone]
    # a run trains from the caches without encoding anything again
    assert run_training(workdir, cfg, steps=1, progress=False)["encoded"] == 0


def test_the_loss_mask_is_stored_at_latent_resolution_and_equals_the_full_resolution_one(labelled, tmp_path):
    workdir = _copy(labelled, tmp_path)
    wd = Workdir(workdir)
    cfg = load_config("tiny", [*FAST, "train.hflip=false"])
    preprocess_in_process(workdir, cfg)
    clips = load_clips(wd, cfg)
    assert len(clips) == 3
    labels = wd.read("labels")
    m = cfg.model
    for clip in clips:
        assert clip.mask_counts.dtype == torch.uint8 and clip.mask_counts.shape[-2:] == clip.latents.shape[-2:]
        assert not any(torch.is_tensor(v) and v.shape[-2:] == (m.height, m.width) for v in vars(clip).values())
        frames, ids = load_cached_clip(wd, labels[labels["video_id"] == clip.video_id]["frames_path"].iloc[0])
        _, ids = resize_clip(frames, ids, (m.height, m.width))
        chosen = clip.entity_ids[[0, -1]]
        full = T.mask_to_latent(torch.from_numpy(np.isin(ids, chosen))[None], *clip.latents.shape[-2:])[0]
        counts = clip.mask_counts[:, [0, len(clip.entity_ids) - 1]].sum(1, dtype=torch.float32)[:, None] / clip.cell**2
        torch.testing.assert_close(counts, full)


def test_training_loads_no_vae_and_no_image_encoder(labelled, tmp_path):
    workdir = _copy(labelled, tmp_path)
    base = tmp_path / "base"
    cfg = load_config("tiny", FAST)
    StableVideoDiffusionPipeline(**build_tiny_svd(tiny_sizes(cfg.model))).save_pretrained(base, safe_serialization=True)
    cfg = load_config("tiny", [*FAST, f"model.base_model_path={base}"])
    key = preprocess_in_process(workdir, cfg)["key"]  # (the flow's preprocess stage reports the key the same way)
    wd = Workdir(workdir)
    cache = read_cache(wd, cache_file(wd, cfg, key, clip_specs(wd, cfg)[0][0], False))
    assert set(cache) >= {"latents", "embeddings", "cond", "mask_counts", "vectors"}
    # with the caches there, training needs the base UNet alone: the VAE's weights and the image encoder can go
    (base / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(base / "image_encoder")
    out = run_training(workdir, cfg, steps=1, progress=False, cache_key=key)
    assert out["trained_steps"] == 1 and out["encoded"] == 0


def test_a_cache_file_loads_with_weights_only(labelled, tmp_path):
    workdir = _copy(labelled, tmp_path)
    cfg = load_config("tiny", FAST)
    written = preprocess_in_process(workdir, cfg)["encoded"]
    with open(tmp_path / "w" / written[0], "rb") as f:
        payload = torch.load(f, weights_only=True)
    assert payload["cond"][0].shape[0] == cfg.train.cond_noise_draws
