"""Every tensor model/ creates is on its inputs' device (a CPU-runnable guard against device mixing).

Inside ``torch.device("meta")`` every tensor made without an explicit device lands on the
meta device, while the inputs and weights here are on the CPU: a function that builds a
tensor without asking its inputs where they live then mixes meta with CPU and fails (or
hands back meta tensors), exactly where it would mix CPU with CUDA on a GPU. Functions
that pass their inputs' device along give the same numbers inside and outside.
"""

import numpy as np
import pytest
import torch

from model.control_encoder import ControlEncoder
from model.controlnet import DragAnythingControlNetModel, EntityInputs
from model.entity_features import EntityFeatureExtractor
from model.maps import CONDITIONINGS, loss_mask, render_conditions
from model.unet_control import controlled_prediction


def foreign_default_device():
    """Tensors made without a device go to 'meta' (not the inputs' CPU)."""
    return torch.device("meta")


def _scene(t=4, h=64, w=64):
    g = torch.Generator().manual_seed(0)
    centers = torch.rand(t, 3, 2, generator=g) * torch.tensor([w, h])
    radii = torch.tensor([12.0, 7.0, 3.0])
    vectors = torch.randn(3, 16, generator=g)
    return vectors, centers, radii


def _all_on_cpu(tensors):
    return all(x.device.type == "cpu" for x in tensors)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_every_map_is_made_on_its_inputs_device(conditioning):
    v, c, r = _scene()
    want = render_conditions(conditioning, c, r, 64, 64, vectors=v)
    with foreign_default_device():
        got = render_conditions(conditioning, c, r, 64, 64, vectors=v)
        mask = loss_mask(c, r, 64, 64)
    assert got.keys() == want.keys() and _all_on_cpu([*got.values(), mask])
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


def test_both_entity_encoder_paths_run_on_their_inputs_device():
    torch.manual_seed(0)
    enc = ControlEncoder(in_channels=16, block_out_channels=(16, 8, 8, 16), out_channels=32)
    torch.nn.init.normal_(enc.conv_out.weight, std=0.1)
    v, c, r = _scene()
    maps = render_conditions("entity", c, r, 64, 64, vectors=v)["entity"]
    with torch.no_grad():
        want = enc.forward_entities(v, c, r, 64, 64, frame_chunk=3)
        with foreign_default_device():
            fast = enc.forward_entities(v, c, r, 64, 64, frame_chunk=3)
            dense = enc(maps, frame_chunk=3)
    assert _all_on_cpu([fast, dense])
    torch.testing.assert_close(fast, want, rtol=0, atol=0)
    torch.testing.assert_close(dense, want, rtol=1e-4, atol=1e-4)


def test_entity_extractor_pools_on_the_features_device(tiny_parts):
    ext = EntityFeatureExtractor(tiny_parts["unet"], tiny_parts["vae"], pooled_channels=16)
    img = (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 8:40, 4:28] = True
    masks[1, 30:32, 30:32] = True  # smaller than a feature cell: the centroid fallback
    want = ext.extract(img, masks)
    with foreign_default_device():
        got = ext.extract(img, masks)
    assert got.device.type == "cpu"
    torch.testing.assert_close(got, want)


def test_controller_and_controlled_unet_make_nothing_off_device(tiny_parts):
    unet = tiny_parts["unet"]
    cn = DragAnythingControlNetModel.from_unet(unet, entity_channels=16, encoder_block_out_channels=(8, 8, 8, 8))
    g = torch.Generator().manual_seed(0)
    x, img = torch.randn(1, 4, 4, 8, 8, generator=g), torch.randn(1, 4, 4, 8, 8, generator=g)
    emb = torch.randn(1, 1, unet.config.cross_attention_dim, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02]])
    v, c, r = _scene()
    conds = {"gaussian": render_conditions("gaussian", c, r, 64, 64)["gaussian"][None]}
    args = (unet, cn, x, img, emb, ids, torch.tensor(0.4))
    kw = dict(conditions=conds, entities=[EntityInputs(v, c, r)])
    with torch.no_grad():
        want = controlled_prediction(*args, **kw)
        with foreign_default_device():
            got = controlled_prediction(*args, **kw)
    assert got.device.type == "cpu"
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def _saved_for_backward(fn):
    """(output, the largest number of bytes of any tensor autograd keeps for the backward pass, their sum)."""
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, max(sizes, default=0), sum(sizes)


def test_gradient_checkpointing_keeps_no_full_resolution_activation_of_either_encoder(tiny_parts):
    """With gradients, frame chunks bound memory only under checkpointing: without it backpropagation keeps
    every chunk's full-resolution activations (T x C0 x H x W), with it none of them."""
    cn = DragAnythingControlNetModel.from_unet(tiny_parts["unet"], entity_channels=16, encoder_block_out_channels=(16, 32, 96, 256))
    for p in cn.parameters():
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else None
    t, h, w = 8, 64, 96
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 16, generator=g)
    c = torch.rand(t, 3, 2, generator=g) * torch.tensor([w, h])
    r = torch.tensor([12.0, 7.0, 3.0])
    conds = {"gaussian": render_conditions("gaussian", c, r, h, w)["gaussian"][None]}
    one_map = 2 * 16 * h * w * 4  # one 2-frame chunk's first activation, fp32

    def run():
        return cn.encode_conditions(conds, [EntityInputs(v, c, r)], h, w, t, frame_chunk=2)

    cn.train()
    out, biggest, total = _saved_for_backward(run)
    assert total > t * 16 * h * w * 4  # plain autograd keeps every frame's full-resolution activations
    out.square().sum().backward()
    plain = [p.grad.clone() for p in cn.cond_encoders.parameters()]
    cn.zero_grad()

    cn.enable_gradient_checkpointing()
    assert all(e.gradient_checkpointing for e in cn.cond_encoders.values())
    out2, biggest, total = _saved_for_backward(run)
    assert biggest < one_map and total < one_map, (biggest, total, one_map)
    out2.square().sum().backward()
    for a, b in zip(plain, [p.grad for p in cn.cond_encoders.parameters()]):
        torch.testing.assert_close(a, b)  # the same gradients, recomputed
