import numpy as np
import pytest
import torch

from model.entity_features import EntityFeatureExtractor, build_extractor
from model.maps import downsample_mask
from model.tiny import MissingWeightsError, load_svd_components


def _image(seed=0, h=64, w=64):
    rng = np.random.RandomState(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 40, 40)
    img[:, w // 2 :] = (30, 30, 220)
    return np.clip(img + rng.randint(0, 20, img.shape), 0, 255).astype(np.uint8)


def _masks(h=64, w=64):
    m = np.zeros((3, h, w), bool)
    m[0, 8:40, 4:28] = True  # red half
    m[1, 16:56, 36:60] = True  # blue half
    m[2, 30:34, 30:34] = True  # tiny, straddles both
    return m


@pytest.fixture(scope="module")
def extractor(tiny_parts):
    return EntityFeatureExtractor(tiny_parts["unet"], tiny_parts["vae"], pooled_channels=16)


def test_vectors_differ_between_entities_and_are_the_pooled_mean(extractor):
    img, masks = _image(), _masks()
    vec = extractor.extract(img, masks)
    assert vec.shape == (3, 16) and torch.isfinite(vec).all()
    assert (vec[0] - vec[1]).abs().max() > 1e-3
    # the vector is the mask-weighted mean of the hooked feature map, then channel-pooled
    feats = extractor.feature_map(torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1)
    m = downsample_mask(torch.from_numpy(masks), *feats.shape[-2:])
    manual = (feats[None] * m[:, None]).sum((2, 3)) / m.sum((1, 2))[:, None]
    manual = torch.nn.functional.adaptive_avg_pool1d(manual[:, None], 16)[:, 0]
    torch.testing.assert_close(vec, manual, rtol=1e-5, atol=1e-6)


def test_pooling_is_an_area_weighted_mean_over_the_whole_mask(extractor):
    # a mask made of two disjoint parts gets the area-weighted mean of the parts' vectors:
    # the vector summarises the entire mask, not the pixel one happens to look at
    img = _image()
    a = np.zeros((1, 64, 64), bool)
    b = np.zeros((1, 64, 64), bool)
    a[0, 0:16, 0:16] = True  # 256 px, whole feature cells
    b[0, 40:64, 40:64] = True  # 576 px
    va, vb, vab = (extractor.extract(img, m)[0] for m in (a, b, a | b))
    torch.testing.assert_close(vab, (256 * va + 576 * vb) / 832, rtol=1e-4, atol=1e-5)


def test_extractor_id_names_backbone_timestep_layer_and_weights(tiny_parts, extractor):
    other_t = EntityFeatureExtractor(tiny_parts["unet"], tiny_parts["vae"], timestep=500, pooled_channels=16)
    other_l = EntityFeatureExtractor(tiny_parts["unet"], tiny_parts["vae"], layer=0, pooled_channels=16)
    ids = {extractor.extractor_id, other_t.extractor_id, other_l.extractor_id}
    assert len(ids) == 3 and all(i.startswith("base-unet@") for i in ids)
    assert extractor.layer_name == "up_blocks.1" and other_l.layer_name == "up_blocks.0"
    assert "t261" in extractor.extractor_id


def test_missing_weights_path_is_one_sentence_naming_path_and_layout(tmp_path, tiny_settings):
    missing = tmp_path / "no-svd-here"
    with pytest.raises(MissingWeightsError) as e:
        load_svd_components(missing)
    msg = str(e.value)
    assert str(missing) in msg and "unet/" in msg and "diffusers" in msg
    assert "\n" not in msg and msg.endswith(".")
    settings = tiny_settings.model_copy(update={"entity_backbone": "sd15-unet", "entity_backbone_path": str(missing)})
    with pytest.raises(MissingWeightsError, match="text_encoder"):
        build_extractor(settings)


def test_embed_videos_reads_the_frames_cache(tmp_path, tiny_settings):
    from core.media import save_cached_clip
    from core.tables import TABLES, Workdir
    from tasks.embeddings import embed_videos

    wd = Workdir(str(tmp_path / "wd"))
    ids = np.zeros((2, 64, 64), np.int32)
    ids[:, :32] = 7
    ids[:, 32:] = 301
    save_cached_clip(wd, "frames/d/train/v1.npz", np.stack([_image()] * 2), ids)
    rows = [dict(dataset="d", video_id="v1", entity_id=e, frames_path="frames/d/train/v1.npz") for e in (7, 301)]
    out = embed_videos(wd.url, rows, tiny_settings)
    assert [r["entity_id"] for r in out] == [7, 301]
    assert set(out[0]) == set(TABLES["entity_embeddings"].schema.names)
    assert len(out[0]["vector"]) == tiny_settings.entity_channels and out[0]["extractor"] == out[1]["extractor"]
    assert out[0]["vector"] != out[1]["vector"] and out[0]["layer"].startswith("up_blocks.")


def test_svd_unet_is_conditioned_on_the_unscaled_image_latent(tiny_parts, extractor):
    # SVD's pipeline concatenates vae.encode(image).latent_dist.mode() to the noisy latent,
    # without the scaling factor (0.18215 here); the extractor must feed the UNet the same.
    img = _image()
    seen = []
    hook = tiny_parts["unet"].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        extractor.extract(img, _masks())
    finally:
        hook.remove()
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 127.5 - 1
    with torch.no_grad():
        latent = tiny_parts["vae"].encode(x).latent_dist.mode()
    c = latent.shape[1]
    cond = seen[0][0, 0, c:]  # (sample batch, frame 0, condition channels)
    torch.testing.assert_close(cond, latent[0], rtol=1e-5, atol=1e-5)


def test_training_vectors_are_the_vectors_the_pipeline_computes(tiny_parts, tiny_settings):
    # Labels are at 256 x 256, the tiny model runs at 64 x 64: the vectors stored for training
    # must be those the pipeline computes from the same frame at generation time.
    from model.pipeline import build_pipeline

    img = np.kron(_image(), np.ones((4, 4, 1), np.uint8))  # 256 x 256
    masks = np.kron(_masks()[:1], np.ones((4, 4), bool))
    ext = build_extractor(tiny_settings, base_parts=tiny_parts)
    assert ext.size == (64, 64) and ext.extractor_id.endswith("/64x64/v3")
    stored = ext.extract(img, masks)
    pipe = build_pipeline(tiny_settings, base_parts=tiny_parts)
    pipe.set_entity_extractor(ext)
    seen = []
    plain = ext.extract
    ext.extract = lambda *a, **k: seen.append(plain(*a, **k)) or seen[-1]
    try:
        pipe(img, masks, [[[100, 60]]], height=64, width=64, num_frames=2, num_inference_steps=1, seed=0)
    finally:
        ext.extract = plain
    torch.testing.assert_close(stored, seen[0], rtol=1e-5, atol=1e-6)
