
import numpy as np
import pytest
import torch

from model.maps import CONDITIONINGS
from model.pipeline import build_pipeline
from model.tiny import MissingWeightsError


def _scene():
    rng = np.random.RandomState(0)
    img = (rng.rand(64, 64, 3) * 255).astype(np.uint8)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 40:60, 35:60] = True
    paths = [[[20, 20], [30, 26], [44, 30]], [[47, 50], [30, 44]]]
    return img, masks, paths


def _randomise(cn):
    g = torch.Generator().manual_seed(3)
    for name, p in cn.named_parameters():
        if "controlnet_" in name or "conv_out" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.05


@pytest.fixture(scope="module")
def pipe(tiny_parts, tiny_settings):
    return build_pipeline(tiny_settings, base_parts=tiny_parts)


def test_pipeline_generates_a_video_that_its_seed_fixes(pipe):
    # (its speed is measured in benchmarks/evaluate.py, not asserted here: machines differ 3x)
    img, masks, paths = _scene()
    out = pipe(img, masks, paths, height=64, width=64, num_frames=8, num_inference_steps=3, seed=0)
    frames = out.frames
    assert frames.shape == (1, 8, 64, 64, 3) and np.isfinite(frames).all()
    assert 0 <= frames.min() and frames.max() <= 1
    again = pipe(img, masks, paths, height=64, width=64, num_frames=8, num_inference_steps=3, seed=0).frames
    np.testing.assert_array_equal(frames, again)  # the seed fixes everything


def test_fast_and_dense_entity_paths_give_the_same_video(pipe):
    _randomise(pipe.controlnet)
    img, masks, paths = _scene()
    kw = dict(height=64, width=64, num_frames=8, num_inference_steps=2, seed=1, output_type="latent")
    fast = pipe(img, masks, paths, entity_path="fast", **kw).frames
    dense = pipe(img, masks, paths, entity_path="dense", **kw).frames
    # latents can be large; the encoders agree within 1e-8, two UNet steps amplify that to ~2e-4
    assert (fast - dense).abs().max() <= 5e-4 * max(1.0, float(dense.abs().max()))


def test_whole_frame_selection_moves_the_camera(pipe):
    img, _, _ = _scene()
    out = pipe(img, np.ones((1, 64, 64), bool), [[[32, 32], [20, 32]]], height=64, width=64, num_frames=8,
               num_inference_steps=2, seed=0, min_guidance_scale=1.0, max_guidance_scale=1.0)
    assert out.frames.shape == (1, 8, 64, 64, 3)


@pytest.mark.parametrize("conditioning", [c for c in CONDITIONINGS if c != "entity+gaussian"])
def test_every_conditioning_generates(tiny_parts, tiny_settings, conditioning):
    s = tiny_settings.model_copy(update={"conditioning": conditioning, "encoder": "strided" if conditioning == "entity" else "fast"})
    p = build_pipeline(s, base_parts=tiny_parts)
    _randomise(p.controlnet)
    img, masks, paths = _scene()
    out = p(img, masks, paths, height=64, width=64, num_frames=8, num_inference_steps=1, seed=0, max_guidance_scale=1.0)
    assert np.isfinite(out.frames).all()


def test_saved_controller_loads_into_the_pipeline(pipe, tiny_parts, tiny_settings, tmp_path):
    pipe.controlnet.save_pretrained(tmp_path / "ckpt")
    p2 = build_pipeline(tiny_settings, controlnet_path=str(tmp_path / "ckpt"), base_parts=tiny_parts)
    a, b = pipe.controlnet.state_dict(), p2.controlnet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(MissingWeightsError, match="config.json"):
        build_pipeline(tiny_settings, controlnet_path=str(tmp_path / "nothing"), base_parts=tiny_parts)


def test_a_fresh_controller_starts_the_same_whatever_ran_before(tiny_parts, tiny_settings):
    torch.manual_seed(1)
    a = build_pipeline(tiny_settings, base_parts=tiny_parts).controlnet.state_dict()
    torch.rand(1000)  # another state of the global RNG, as in a reused worker process
    b = build_pipeline(tiny_settings, base_parts=tiny_parts).controlnet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.get_rng_state()
    build_pipeline(tiny_settings, base_parts=tiny_parts)
    assert torch.equal(state, torch.get_rng_state())


def test_weights_fingerprint_is_about_weights_not_folders(tiny_parts, tmp_path):
    from diffusers import AutoencoderKLTemporalDecoder

    from model.tiny import weights_fingerprint

    vae = tiny_parts["vae"]
    for name in ("a", "b"):
        vae.save_pretrained(tmp_path / name)
    a, b = (AutoencoderKLTemporalDecoder.from_pretrained(tmp_path / n) for n in ("a", "b"))
    assert a.config._name_or_path != b.config._name_or_path
    assert weights_fingerprint(a) == weights_fingerprint(b) == weights_fingerprint(vae), "saved and loaded: the same weights"
    with torch.no_grad():
        next(b.parameters()).add_(1.0)
    assert weights_fingerprint(a) != weights_fingerprint(b)


def test_a_timed_path_keeps_its_timing_and_a_drag_is_interpolated(pipe):
    # Stop and go: still for three frames, then a jump. Re-timed to constant speed it
    # would be 0, 3.3, 6.7, 10: a video conditioned on a different motion than it is scored on.
    masks = np.zeros((1, 64, 64), bool)
    masks[0, 20:30, 20:30] = True
    stop_go = [[20.0, 24.0], [20.0, 24.0], [20.0, 24.0], [30.0, 24.0]]
    _, centres, _, _ = pipe.prepare_entities(masks, [stop_go], num_frames=4, height=64, width=64)
    np.testing.assert_allclose(centres[:, 0, 0].numpy(), [20, 20, 20, 30], atol=1e-5)
    _, centres, _, _ = pipe.prepare_entities(masks, [[[20.0, 24.0], [30.0, 24.0]]], num_frames=4, height=64, width=64)
    np.testing.assert_allclose(centres[:, 0, 0].numpy(), [20, 20 + 10 / 3, 20 + 20 / 3, 30], atol=1e-4)  # a drag: even steps


def test_the_controller_is_not_in_the_offload_chain():
    """Chained, the UNet's hook would send the 685M-parameter controller back to the CPU at every step."""
    from model.pipeline import DragAnythingPipeline

    seq = DragAnythingPipeline.model_cpu_offload_seq.split("->")
    assert seq == ["image_encoder", "unet", "vae"] and "controlnet" not in DragAnythingPipeline._exclude_from_cpu_offload


def test_the_conditioning_encoders_run_once_per_video_with_the_same_output(pipe, monkeypatch):
    """Cached across the denoising steps and both guidance halves: one call per encoder, and the video is the
    one the controller gets when it encodes the maps itself at every step."""
    from model.control_encoder import ControlEncoder

    _randomise(pipe.controlnet)
    img, masks, paths = _scene()
    kw = dict(height=64, width=64, num_frames=8, num_inference_steps=3, seed=0, output_type="latent")
    calls = {"forward": 0, "forward_entities": 0}
    for name in calls:
        original = getattr(ControlEncoder, name)

        def counted(self, *a, _name=name, _original=original, **k):
            calls[_name] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(ControlEncoder, name, counted)
    cached = pipe(img, masks, paths, **kw).frames
    assert calls == {"forward": 1, "forward_entities": 1}  # the Gaussian encoder and the entity encoder, once each
    monkeypatch.setattr(type(pipe), "encode_controls", lambda self, *a, **k: None)  # the controller encodes at every step
    every_step = pipe(img, masks, paths, **kw).frames
    # uncached: the Gaussian encoder once per step (both halves batched), the entity encoder once per step and half
    assert calls["forward"] == 1 + 3 and calls["forward_entities"] == 1 + 3 * 2
    torch.testing.assert_close(cached, every_step, rtol=1e-5, atol=1e-6)
