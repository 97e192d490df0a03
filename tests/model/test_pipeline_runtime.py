"""How generation runs: micro-conditioning, dtype, fp16 VAE upcast, decode chunks, the step callback."""

import numpy as np
import pytest
import torch

from core.config import load_config
from model.pipeline import build_pipeline, place_pipeline
from model.tiny import TinySizes, build_tiny_svd
from tasks.controller import ControllerGenerator
from tasks.suites import SuiteItem


def _item(frames=4):
    rng = np.random.RandomState(0)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 40:60, 35:60] = True
    paths = np.stack([np.linspace([20, 20], [40, 28], frames), np.linspace([47, 50], [30, 44], frames)]).astype(np.float32)
    return SuiteItem("sample", "x", (rng.rand(64, 64, 3) * 255).astype(np.uint8), masks, [1, 2], paths,
                         np.ones((2, frames), bool), np.array([10.0, 10.0]), (64, 64))


def _generator(overrides=(), parts=None):
    cfg = load_config("tiny", ["generate.num_inference_steps=1", *overrides])
    pipe = build_pipeline(cfg.model, base_parts=parts or build_tiny_svd(TinySizes(num_frames=8)))
    return ControllerGenerator(place_pipeline(pipe, cfg.generate), cfg.model, cfg.generate)


def _record_kwargs(module, name, into):
    return module.register_forward_pre_hook(lambda m, args, kwargs: into.append(kwargs[name]), with_kwargs=True)


def test_controller_is_conditioned_on_fps_id_6_as_in_training_and_the_mp4_rate_is_separate():
    gen = _generator(["generate.fps=25"])  # the video's frame rate says nothing about the conditioning
    seen = []
    hook = _record_kwargs(gen.pipe.controlnet, "added_time_ids", seen)
    gen(_item(), 0)
    hook.remove()
    assert seen and all(float(ids[0, 0]) == 6.0 for ids in seen)
    # the pipeline's own default is diffusers' fps=7, i.e. the same time id
    seen.clear()
    hook = _record_kwargs(gen.pipe.controlnet, "added_time_ids", seen)
    it = _item()
    gen.pipe(it.image, it.masks, list(it.trajectories), height=64, width=64, num_frames=4, num_inference_steps=1, seed=0)
    hook.remove()
    assert float(seen[0][0, 0]) == 6.0


def test_the_vae_decodes_decode_chunk_size_frames_at_a_time():
    gen = _generator(["generate.decode_chunk_size=4"])
    calls = []
    hook = gen.pipe.vae.decoder.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    frames = gen(_item(frames=7), 0)
    hook.remove()
    assert frames.shape == (7, 64, 64, 3)
    assert calls == [4, 3]


def test_generation_runs_in_generate_dtype():
    gen = _generator(["generate.dtype=bf16"])
    seen = []
    hooks = [_record_kwargs(gen.pipe.controlnet, "encoder_hidden_states", seen)]
    hooks.append(gen.pipe.unet.conv_in.register_forward_pre_hook(lambda m, args: seen.append(args[0])))
    frames = gen(_item(), 0)
    for h in hooks:
        h.remove()
    assert {p.dtype for m in (gen.pipe.unet, gen.pipe.vae, gen.pipe.controlnet, gen.pipe.image_encoder) for p in m.parameters()} == {torch.bfloat16}
    assert seen and all(x.dtype == torch.bfloat16 for x in seen)
    assert frames.dtype == np.uint8 and frames.std() > 0


def test_an_fp16_vae_that_asks_for_it_encodes_upcast_and_stays_fp16():
    parts = build_tiny_svd(TinySizes(num_frames=8))
    gen = _generator(parts=parts)
    vae = gen.pipe.vae
    vae.register_to_config(force_upcast=True)
    vae.to(torch.float16)
    seen = []
    hook = vae.encoder.register_forward_pre_hook(lambda m, args: seen.append((args[0].dtype, m.conv_in.weight.dtype)))
    gen(_item(), 0)
    hook.remove()
    assert seen and all(d == (torch.float32, torch.float32) for d in seen)  # inputs and weights
    assert vae.dtype == torch.float16


def test_callback_on_step_end_sees_every_step_and_can_replace_the_latents():
    gen = _generator()
    it = _item()
    steps = []

    def zero_at_the_end(pipe, i, t, kwargs):
        steps.append((i, float(t)))
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == 2 else {}

    kw = dict(height=64, width=64, num_frames=4, num_inference_steps=3, seed=0, output_type="latent")
    out = gen.pipe(it.image, it.masks, list(it.trajectories), callback_on_step_end=zero_at_the_end, **kw).frames
    assert [i for i, _ in steps] == [0, 1, 2] and steps[0][1] > steps[-1][1]
    assert float(out.abs().max()) == 0.0
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        gen.pipe(it.image, it.masks, list(it.trajectories), callback_on_step_end=zero_at_the_end,
                 callback_on_step_end_tensor_inputs=["noise"], **kw)
    progress = []
    gen(it, 0, on_step=lambda done, total: progress.append((done, total)))
    assert progress == [(0, 1), (1, 1)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_where_the_process_sees_no_gpu_is_one_clear_error():
    from types import SimpleNamespace

    from model.pipeline import generation_device, place_pipeline

    assert generation_device(SimpleNamespace(device="auto")).type == "cpu"
    with pytest.raises(RuntimeError, match=r"generate.device is 'cuda' but this process sees no GPU; give the task one \(runtime.task_num_gpus: 1\)"):
        place_pipeline(None, SimpleNamespace(device="cuda", dtype="fp32", cpu_offload=False))
