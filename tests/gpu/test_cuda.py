"""The model on a GPU: maps, encoders, extractor, a training step and generation on CUDA.

Marked ``gpu``: skipped without CUDA. They import only model/ (and core/ parts without
pydantic), torch, transformers, accelerate, safetensors and diffusers, so they run on a bare
GPU machine with a carried diffusers wheel (benchmarks/README.md, "On a GPU machine").
With ``DRAGANYTHING_GPU_DEVICE=cpu`` they run on the CPU instead: the rehearsal in
tests/test_bare_gpu_machine.py runs every call here where the GPU's modules are all a machine has.

TF32 is off here: the CUDA results are compared with the CPU's in fp32 (cuDNN's default TF32
convolutions put the extractor's comparison past its tolerance); benchmarks/gpu.py measures with it on.
"""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model.control_encoder import ControlEncoder
from model.controlnet import EntityInputs
from model.entity_features import EntityFeatureExtractor
from model.maps import CONDITIONINGS, render_conditions
from model.pipeline import DragAnythingPipeline, build_controlnet
from model.tiny import TinySizes, build_tiny_svd
from model.unet_control import controlled_prediction

pytestmark = pytest.mark.gpu
CUDA = torch.device(os.environ.get("DRAGANYTHING_GPU_DEVICE", "cuda"))
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
SETTINGS = SimpleNamespace(conditioning="entity+gaussian", entity_channels=16, encoder_channels=(16, 16, 32, 32), encoder="fast")


def _scene(t=6, h=64, w=64, device="cpu"):
    g = torch.Generator().manual_seed(0)
    centers = torch.rand(t, 3, 2, generator=g) * torch.tensor([w, h])
    return torch.randn(3, 16, generator=g).to(device), centers.to(device), torch.tensor([12.0, 7.0, 3.0]).to(device)


@pytest.fixture(scope="module")
def parts():
    return build_tiny_svd(TinySizes(num_frames=8))


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_maps_render_on_cuda_as_on_the_cpu(conditioning):
    v, c, r = _scene()
    want = render_conditions(conditioning, c, r, 64, 64, vectors=v)
    got = render_conditions(conditioning, c.to(CUDA), r.to(CUDA), 64, 64, vectors=v.to(CUDA))
    for k in want:
        assert got[k].device.type == CUDA.type
        torch.testing.assert_close(got[k].cpu(), want[k], rtol=0, atol=1e-6)


def test_the_fast_entity_encoder_runs_on_cuda_forward_and_backward():
    torch.manual_seed(0)
    enc = ControlEncoder(16, (16, 32, 96, 256), 320)
    torch.nn.init.normal_(enc.conv_out.weight, std=0.1)
    v, c, r = _scene()
    with torch.no_grad():
        want = enc.forward_entities(v, c, r, 64, 64)
    enc = enc.to(CUDA)
    got = enc.forward_entities(*(x.to(CUDA) for x in (v, c, r)), 64, 64)
    torch.testing.assert_close(got.detach().cpu(), want, rtol=1e-3, atol=1e-3)
    got.square().mean().backward()
    assert enc.conv_in.weight.grad.abs().sum() > 0


def test_the_entity_extractor_runs_on_cuda(parts):
    cpu = EntityFeatureExtractor(parts["unet"], parts["vae"], pooled_channels=16)
    img = (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 8:40, 4:28] = True
    masks[1, 30:32, 30:32] = True
    want = cpu.extract(img, masks)
    gpu = EntityFeatureExtractor(parts["unet"].to(CUDA), parts["vae"].to(CUDA), pooled_channels=16)
    got = gpu.extract(img, masks)
    parts["unet"].cpu(), parts["vae"].cpu()
    assert got.device.type == CUDA.type
    torch.testing.assert_close(got.cpu(), want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_training_step_on_cuda_with_autocast_and_gradient_checkpointing(parts, dtype):
    unet = parts["unet"].to(CUDA, dtype)
    cn = build_controlnet(SETTINGS, parts["unet"], 8).to(CUDA, torch.float32).train().requires_grad_(True)
    cn.enable_gradient_checkpointing()
    v, c, r = _scene(t=8, device=CUDA)
    g = torch.Generator().manual_seed(0)
    x, img = (torch.randn(1, 8, 4, 8, 8, generator=g).to(CUDA) for _ in range(2))
    emb = torch.randn(1, 1, unet.config.cross_attention_dim, generator=g).to(CUDA)
    conds = {"gaussian": render_conditions("gaussian", c, r, 64, 64)["gaussian"][None]}
    ids = torch.tensor([[6.0, 127.0, 0.02]], device=CUDA)
    with torch.autocast(CUDA.type, dtype=dtype):
        out = controlled_prediction(unet, cn, x, img, emb, ids, torch.tensor(0.4, device=CUDA),
                                    conditions=conds, entities=[EntityInputs(v, c, r)])
    out.float().square().mean().backward()
    assert torch.isfinite(out).all() and any(p.grad is not None for p in cn.parameters())
    parts["unet"].to("cpu", torch.float32)


def _pipeline(parts, dtype):
    tiny = {k: v for k, v in parts.items()}
    pipe = DragAnythingPipeline(controlnet=build_controlnet(SETTINGS, tiny["unet"], tiny["vae"]).eval(), **tiny)
    pipe.set_progress_bar_config(disable=True)
    pipe.set_entity_extractor(EntityFeatureExtractor(tiny["unet"], tiny["vae"], pooled_channels=16))
    return pipe.to(dtype=dtype)


PATHS = {  # every kind of path: one point (no motion), two (a line), many (PCHIP), one per frame (timed)
    "1-point": [[[20, 20]], [[47, 50]]],
    "2-point": [[[20, 20], [44, 30]], [[47, 50], [30, 44]]],
    "many-point": [[[20, 20], [30, 26], [44, 30], [40, 40]], [[47, 50], [40, 47], [30, 44]]],
    "timed": [[[20 + 3 * k, 20 + k] for k in range(8)], [[47 - 2 * k, 50 - k] for k in range(8)]],
}


def _call(pipe, paths=PATHS["many-point"], **kw):
    img = (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 40:60, 35:60] = True
    return pipe(img, masks, paths, height=64, width=64, num_frames=8, num_inference_steps=2, seed=0, decode_chunk_size=3, **kw).frames


@pytest.mark.parametrize("kind", sorted(PATHS))
@pytest.mark.parametrize("radii", [None, [9.0, 7.0]], ids=["incircle-radii", "given-radii"])
def test_generation_on_cuda_with_each_kind_of_path(parts, kind, radii):
    pipe = _pipeline(parts, torch.float32).to(CUDA)
    frames = _call(pipe, PATHS[kind], radii=radii)
    pipe.to("cpu")
    assert frames.shape == (1, 8, 64, 64, 3) and np.isfinite(frames).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_generation_on_cuda_in_each_dtype(parts, dtype):
    pipe = _pipeline(build_tiny_svd(TinySizes(num_frames=8)), dtype).to(CUDA)
    frames = _call(pipe)
    assert frames.shape == (1, 8, 64, 64, 3) and np.isfinite(frames).all()
    assert pipe.vae.dtype == dtype  # an fp16 VAE encodes upcast and is cast back


def test_generation_with_model_cpu_offload(parts):
    pipe = _pipeline(build_tiny_svd(TinySizes(num_frames=8)), torch.bfloat16)
    pipe.enable_model_cpu_offload(device=CUDA)
    where = []  # the controller's device after each step: resident, not sent back by the UNet's hook
    frames = _call(pipe, callback_on_step_end=lambda p, i, t, kw: where.append(next(p.controlnet.parameters()).device.type) or {})
    assert np.isfinite(frames).all()
    assert where == [CUDA.type] * 2
    assert next(pipe.unet.parameters()).device.type == "cpu"  # offloaded again after the call


def test_place_pipeline_puts_the_pipeline_and_a_separate_extractor_backbone_on_the_gpu():
    """What the generate stage does with ``generate.device=auto`` in a task that has a GPU (``place_pipeline``)."""
    from model.pipeline import place_pipeline

    pipe = _pipeline(build_tiny_svd(TinySizes(num_frames=8)), torch.float32)
    other = build_tiny_svd(TinySizes(num_frames=8))  # an extractor with its own backbone, as SD1.5 is
    pipe.set_entity_extractor(EntityFeatureExtractor(other["unet"], other["vae"], pooled_channels=16))
    place_pipeline(pipe, SimpleNamespace(device="auto", dtype="bf16", cpu_offload=False))
    for module in (pipe.unet, pipe.vae, pipe.controlnet, pipe.image_encoder, pipe.entity_extractor.unet, pipe.entity_extractor.vae):
        assert {(p.device.type, p.dtype) for p in module.parameters()} == {(CUDA.type, torch.bfloat16)}
    assert np.isfinite(_call(pipe)).all()
