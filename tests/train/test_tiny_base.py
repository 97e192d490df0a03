"""The tiny base fit (CPU demo only): its own split, VAE windows, unit-variance latents, reuse; mirrored clips."""

from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import load_config
from core.tables import Workdir
from model.pipeline import build_pipeline
from tasks.labels import VideoRef, label_videos
from tasks.train import _random_crops, fit_tiny_base, load_clips

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
    clips = load_clips(wd, cfg.model_copy(update={"model": fitted}), pipe, None)
    assert [c.video_id for c in clips] == ["sample_0001"]
    assert 0.5 < float(clips[0].latents.std()) < 2.0

    before = (Path(wd.local_path(rel)) / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert fit_tiny_base(wd, cfg, progress=False) == rel  # same settings: the fitted folder is reused
    assert (Path(wd.local_path(rel)) / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before


def test_fit_without_clips_of_its_split_says_which_split(two_splits):
    cfg = load_config("tiny", [*FIT, "train.fit_base.split=nosuchsplit"])
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
    cfg = load_config("tiny", ["train.fit_base.enabled=false", "model.num_frames=4", "train.hflip=true"])
    pipe = build_pipeline(cfg.model)
    plain, mirrored = load_clips(wd, cfg, pipe, None)
    assert mirrored.video_id == plain.video_id + "~hflip"
    W = cfg.model.width
    assert torch.allclose(mirrored.centers[..., 0], W - 1 - plain.centers[..., 0])
    assert torch.equal(mirrored.centers[..., 1], plain.centers[..., 1])
    assert np.array_equal(mirrored.ids, plain.ids[:, :, ::-1])
    assert torch.equal(mirrored.pixels, plain.pixels.flip(-1))
    # encoded from the mirrored frames, not a flip of the latents
    assert not torch.allclose(mirrored.latents, plain.latents.flip(-1))
