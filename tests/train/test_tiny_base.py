"""The tiny base fit (CPU demo only): its own split, VAE windows, image-like latents, unit variance, reuse;
mirrored clips; windows of the labelled frames, forwards and backwards."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.config import load_config
from core.media import load_cached_clip
from core.tables import Workdir
from model.pipeline import build_pipeline
from tasks.fit_base import _random_crops, fit_tiny_base
from tasks.labels import VideoRef, label_videos
from tasks.train import preprocess_in_process
from tasks.train_data import Clip, batch_for_step, load_clips

from .conftest import overriding


def _clips(wd, cfg):
    preprocess_in_process(wd.url, cfg)
    return load_clips(wd, cfg)

FIT = ["train.fit_base.enabled=true", "train.fit_base.vae_steps=2", "train.fit_base.unet_steps=2", "train.fit_base.batch_size=1",
       "train.fit_base.split=pretrain", "train.hflip=false", "model.num_frames=4"]


@pytest.fixture(scope="module")
def two_splits(sample_root, tmp_path_factory):
    """One video labelled as split 'pretrain', another as 'train'."""
    root = tmp_path_factory.mktemp("tinybase")
    cfg = load_config("tiny", FIT)
    for split, video in (("pretrain", "sample_0000"), ("train", "sample_0001")):
        rows, _ = label_videos(str(sample_root), [VideoRef("sample", split, video)], cfg.labels, {}, str(root))
        Workdir(root).append("labels", rows)
    return root


def test_fit_uses_its_own_split_sets_unit_variance_and_is_reused(two_splits, monkeypatch):
    wd = Workdir(two_splits)
    cfg = load_config("tiny", FIT)
    seen = []
    real_read = Workdir.read

    def spy(self, table, *a, **kw):
        out = real_read(self, table, *a, **kw)
        if table == "labels":
            seen.extend(sorted(set(out["video_id"])))
        return out

    monkeypatch.setattr(Workdir, "read", spy)
    rel = fit_tiny_base(wd, cfg, progress=False)
    monkeypatch.undo()
    assert seen == ["sample_0000"], "the base must be fitted on fit_base.split only, never on the controller's clips"
    assert wd.exists(rel, "model_index.json")

    fitted = cfg.model.model_copy(update={"base_model_path": wd.local_path(rel)})
    pipe = build_pipeline(fitted)
    assert pipe.vae.config.scaling_factor != pytest.approx(0.18215), "the fit sets a unit-variance scaling factor"
    plain = cfg.model_copy(update={"train": cfg.train.model_copy(update={"fit_base": cfg.train.fit_base.model_copy(update={"enabled": False})})})
    clips = _clips(wd, plain.model_copy(update={"model": fitted}))
    assert [c.video_id for c in clips] == ["sample_0001"]
    assert 0.5 < float(clips[0].latents.std()) < 2.0

    before = (Path(wd.local_path(rel)) / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert fit_tiny_base(wd, cfg, progress=False) == rel  # same settings: the fitted folder is reused
    assert (Path(wd.local_path(rel)) / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before


def test_fit_without_clips_of_its_split_says_which_split(two_splits):
    cfg = load_config("tiny", overriding(FIT, "train.fit_base.split=nosuchsplit"))
    with pytest.raises(ValueError, match="split 'nosuchsplit'.*draganything labels --split nosuchsplit"):
        fit_tiny_base(Workdir(two_splits), cfg, progress=False)


def test_random_crops_are_windows_of_the_images():
    rng = np.random.default_rng(0)
    x = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).reshape(2, 3, 10, 12)
    out = _random_crops(x, 4, rng)
    assert out.shape == (2, 3, 4, 4)
    for img, crop in zip(x, out):
        hits = [(y, x0) for y in range(7) for x0 in range(9) if torch.equal(img[:, y : y + 4, x0 : x0 + 4], crop)]
        assert len(hits) == 1
    assert _random_crops(x, 64, rng) is x  # frames no larger than the window are used whole


def test_hflip_adds_a_mirrored_copy_of_every_clip(two_splits):
    wd = Workdir(two_splits)
    cfg = load_config("tiny", ["train.fit_base.enabled=false", "model.num_frames=4", "train.hflip=true", "train.windows=false",
                               "train.reverse=false"])
    plain, mirrored = _clips(wd, cfg)
    assert mirrored.video_id == plain.video_id + "~hflip"
    W = cfg.model.width
    assert torch.allclose(mirrored.centers[..., 0], W - 1 - plain.centers[..., 0])
    assert torch.equal(mirrored.centers[..., 1], plain.centers[..., 1])
    assert torch.equal(mirrored.mask_counts, plain.mask_counts.flip(-1))  # the loss mask, at latent resolution
    assert not torch.allclose(mirrored.first_frames[0][0], plain.first_frames[0][0].flip(-1))  # conditioning re-encoded too
    # encoded from the mirrored frames, not a flip of the latents
    assert not torch.allclose(mirrored.latents, plain.latents.flip(-1))


def test_views_are_windows_of_the_labelled_frames_forwards_and_backwards(two_splits):
    wd = Workdir(two_splits)
    L = 4
    cfg = load_config("tiny", ["train.fit_base.enabled=false", f"model.num_frames={L}", "train.hflip=false", "train.windows=true",
                               "train.reverse=true", "train.batch_size=1", "train.max_entities=1"])
    (clip,) = _clips(wd, cfg)
    n = len(clip.latents)
    assert n == cfg.labels.frames.count > L
    assert set(clip.views) <= {(s, b) for s in range(n - L + 1) for b in (False, True)}
    seen, checked = set(), 0
    for step in range(60):
        batch = batch_for_step([clip], step, cfg)
        # which window is it? the latents say, and everything else must agree with them
        (view,) = [v for v in clip.views if torch.equal(batch.latents[0], clip.latents[Clip.window(*v, L)])]
        frames = Clip.window(*view, L)
        seen.add(view)
        draws, embedding = clip.first_frames[int(frames[0])]
        assert any(torch.equal(batch.image_latents[0], d) for d in draws) and torch.equal(batch.embeddings[0], embedding)
        # the Gaussian of the drawn entity sits on its centres in those frames, in that order
        gauss = batch.conditions["gaussian"][0, :, 0]
        if not gauss.any():
            assert (clip.radii[frames[0]][clip.usable[frames[0]]] < 2.5).any()  # an entity too small for a Gaussian
            continue
        checked += 1
        on_path = [all(gauss[t, int(c[1].round()), int(c[0].round())] > 0 for t, c in enumerate(clip.centers[frames][:, k])
                       if 0 <= c.min() and c.max() <= 63) for k in range(len(clip.entity_ids))]
        assert any(on_path)
    assert any(b for _, b in seen) and any(not b for _, b in seen), "both directions"
    assert len({s for s, _ in seen}) > 3, "several windows"
    assert checked > 30

    one = load_config("tiny", ["train.fit_base.enabled=false", f"model.num_frames={L}", "train.hflip=false", "train.windows=false",
                               "train.reverse=false"])
    (plain,) = _clips(wd, one)
    assert plain.views == [(0, False)]
    assert torch.equal(batch_for_step([plain], 0, one).latents[0], plain.latents[:L])


def test_vae_preview_makes_latents_follow_the_image(two_splits):
    """With ``vae_preview`` the first latent channels are the frame's colours averaged per latent pixel:
    an entity's latent then moves with it instead of changing with where it sits in the patch grid."""
    wd = Workdir(two_splits)
    path = wd.read("labels").query("split == 'pretrain'")["frames_path"].iloc[0]
    frames = torch.from_numpy(load_cached_clip(wd, path)[0][0:8:2]).permute(0, 3, 1, 2).float() / 127.5 - 1
    x = F.interpolate(frames, size=(64, 64), mode="area")
    gaps = {}
    for weight in (0.0, 1.0):
        cfg = load_config("tiny", overriding(FIT, "train.fit_base.vae_steps=40", f"train.fit_base.vae_preview={weight}"))
        rel = fit_tiny_base(wd, cfg, progress=False)
        vae = build_pipeline(cfg.model.model_copy(update={"base_model_path": wd.local_path(rel)})).vae
        with torch.no_grad():
            latent = vae.encode(x).latent_dist.mode()
        gaps[weight] = float(F.mse_loss(latent[:, :3], F.avg_pool2d(x, x.shape[-1] // latent.shape[-1])))  # the VAE's factor (4 in the tiny profile)
    assert gaps[1.0] < 0.2 * gaps[0.0], gaps
