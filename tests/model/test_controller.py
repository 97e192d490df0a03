import pytest
import torch

from model.control_encoder import ControlEncoder
from model.controlnet import DragAnythingControlNetModel, EntityInputs
from model.maps import CONDITIONINGS, entity_maps, render_conditions
from model.unet_control import controlled_prediction, unet_forward_with_control


def _entities(t=4, n=5, c=16, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(t, n, 2, generator=g) * torch.tensor([w + 8.0, h + 8.0]) - 4  # some leave the frame
    radii = 2 + torch.rand(n, generator=g) * 12
    return torch.randn(n, c, generator=g), centers, radii


def _inputs(unet, b=2, t=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 4, 8, 8, generator=g)
    img = torch.randn(b, t, 4, 8, 8, generator=g)
    emb = torch.randn(b, 1, unet.config.cross_attention_dim, generator=g)
    ids = torch.tensor([[5.0, 127.0, 0.02]]).repeat(b, 1)
    return x, img, emb, ids, torch.tensor(0.4)


def _randomise_outputs(cn, std=0.05):
    g = torch.Generator().manual_seed(1)
    for name, p in cn.named_parameters():
        if "controlnet_" in name or "conv_out" in name:
            p.data = torch.randn(p.shape, generator=g) * std
    return cn


@pytest.mark.parametrize("stride,downsample", [(1, 8), (2, 8), (1, 4), (2, 4)])
def test_fast_entity_encoder_equals_dense(stride, downsample):
    torch.manual_seed(0)
    enc = ControlEncoder(in_channels=16, block_out_channels=(16, 8, 8, 16), out_channels=32, first_stride=stride, downsample=downsample)
    torch.nn.init.normal_(enc.conv_out.weight, std=0.1)
    v, c, r = _entities(t=5, h=56, w=72)
    with torch.no_grad():
        dense = enc(entity_maps(v, c, r, 56, 72))
        fast = enc.forward_entities(v, c, r, 56, 72, frame_chunk=2)
    assert dense.shape == fast.shape == (5, 32, 56 // downsample, 72 // downsample)
    assert (dense - fast).abs().max() < 1e-4
    # gradients reach the first convolution through the fast path too (training uses it)
    enc.forward_entities(v, c, r, 56, 72).sum().backward()
    assert enc.conv_in.weight.grad.abs().sum() > 0


def test_encoder_block_shapes():
    enc = ControlEncoder(in_channels=3, block_out_channels=(8, 16, 24, 32), out_channels=40)
    x = torch.randn(2, 3, 64, 96)
    shapes = []
    for m in [enc.conv_in, *enc.body, enc.conv_out]:
        x = m(x)
        if isinstance(m, torch.nn.Conv2d):
            shapes.append(tuple(x.shape[1:]))
    assert shapes[0] == (8, 64, 96) and shapes[-1] == (40, 8, 12) and len(shapes) == 9  # 4 blocks x 2 + out
    assert enc(torch.randn(1, 3, 64, 96)).abs().sum() == 0  # zero-initialised output


def test_controlnet_residual_shapes_match_the_unet(tiny_parts):
    unet = tiny_parts["unet"]
    cn = DragAnythingControlNetModel.from_unet(unet, conditioning="gaussian", encoder_block_out_channels=(8, 8, 8, 8))
    x, img, emb, ids, t = _inputs(unet)
    conds = {"gaussian": torch.rand(2, 8, 1, 64, 64)}
    down, mid = cn(torch.cat([x, img], 2), t, emb, ids, conditions=conds, return_dict=False)
    # the UNet's own skip tensors, captured by running its down blocks
    skips = []
    hooks = [b.register_forward_hook(lambda m, i, o: skips.extend(o[1])) for b in unet.down_blocks]
    conv = unet.conv_in.register_forward_hook(lambda m, i, o: skips.append(o))
    unet(torch.cat([x, img], 2), t, emb, ids)
    for h in hooks + [conv]:
        h.remove()
    assert [tuple(d.shape) for d in down] == [tuple(s.shape) for s in skips]  # conv_in first, then each block's
    assert mid.shape[1] == unet.config.block_out_channels[-1]


def test_a_controller_fits_a_base_whose_vae_halves_twice_with_more_latent_channels():
    from core.config import load_config
    from model.pipeline import build_pipeline

    cfg = load_config("tiny", ["model.tiny.vae_downsample=4", "model.tiny.latent_channels=16", "model.encoder_channels=[8,8,8,8]"])
    pipe = build_pipeline(cfg.model)
    unet, cn = pipe.unet, _randomise_outputs(pipe.controlnet)
    assert pipe.vae_scale_factor == cn.config.pixel_scale == 4 and unet.config.in_channels == 32
    g = torch.Generator().manual_seed(0)
    x, img = torch.randn(1, 8, 16, 16, 16, generator=g), torch.randn(1, 8, 16, 16, 16, generator=g)
    emb, ids = torch.randn(1, 1, unet.config.cross_attention_dim, generator=g), torch.tensor([[5.0, 127.0, 0.02]])
    v, c, r = _entities(t=8, c=cfg.model.entity_channels)
    conds = {k: m[None] for k, m in render_conditions("entity+gaussian", c, r, 64, 64, vectors=v).items()}
    with torch.no_grad():
        out = controlled_prediction(unet, cn, x, img, emb, ids, torch.tensor(0.4), conditions=conds)
        base = unet(torch.cat([x, img], 2), torch.tensor(0.4), emb, ids).sample
    assert out.shape == (1, 8, 16, 16, 16) and (out - base).abs().max() > 1e-3


def test_zero_initialised_control_leaves_the_unet_unchanged_and_nonzero_changes_it(tiny_parts):
    unet = tiny_parts["unet"]
    cn = DragAnythingControlNetModel.from_unet(unet, entity_channels=16, encoder_block_out_channels=(16, 8, 8, 16))
    x, img, emb, ids, t = _inputs(unet, b=1)
    v, c, r = _entities(t=8)
    conds = {k: m[None] for k, m in render_conditions("entity+gaussian", c, r, 64, 64, vectors=v).items()}
    with torch.no_grad():
        base = unet(torch.cat([x, img], 2), t, emb, ids).sample
        assert torch.equal(unet_forward_with_control(unet, torch.cat([x, img], 2), t, emb, ids), base)
        out = controlled_prediction(unet, cn, x, img, emb, ids, t, conditions=conds)
        assert torch.equal(out, base)
        _randomise_outputs(cn)
        dense = controlled_prediction(unet, cn, x, img, emb, ids, t, conditions=conds)
        fast = controlled_prediction(
            unet, cn, x, img, emb, ids, t, conditions={"gaussian": conds["gaussian"]}, entities=[EntityInputs(v, c, r)]
        )
        half = controlled_prediction(unet, cn, x, img, emb, ids, t, conditions=conds, conditioning_scale=0.0)
    assert (dense - base).abs().max() > 1e-3
    assert (dense - fast).abs().max() < 1e-4
    assert torch.equal(half, base)


def test_save_pretrained_round_trips_bit_exactly(tiny_parts, tmp_path):
    cn = _randomise_outputs(
        DragAnythingControlNetModel.from_unet(tiny_parts["unet"], conditioning="entity+gaussian", entity_channels=16,
                                              encoder_block_out_channels=(16, 8, 8, 16), encoder_first_stride=2)
    )
    cn.save_pretrained(tmp_path / "cn")
    assert (tmp_path / "cn" / "diffusion_pytorch_model.safetensors").is_file()
    back = DragAnythingControlNetModel.from_pretrained(tmp_path / "cn", local_files_only=True)
    assert back.config.conditioning == "entity+gaussian" and back.config.encoder_first_stride == 2
    a, b = cn.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_every_conditioning_runs_forward_and_backward(tiny_parts, conditioning):
    unet = tiny_parts["unet"]
    cn = _randomise_outputs(
        DragAnythingControlNetModel.from_unet(unet, conditioning=conditioning, entity_channels=16, encoder_block_out_channels=(8, 8, 8, 8))
    )
    x, img, emb, ids, t = _inputs(unet, b=1)
    v, c, r = _entities(t=8)
    maps = render_conditions(conditioning, c, r, 64, 64, vectors=v, dense_entity=False)
    conds = {k: m[None] for k, m in maps.items()}
    out = controlled_prediction(unet, cn, x, img, emb, ids, t, conditions=conds, entities=[EntityInputs(v, c, r)])
    assert out.shape == x.shape
    out.square().mean().backward()
    trainable = [p for p in cn.parameters() if p.grad is not None]
    assert trainable and all(p.grad is None for p in unet.parameters())


def test_a_ddp_wrapped_controller_runs_the_training_forward_as_the_bare_one(tiny_parts, tmp_path):
    """Ray Train wraps the controller in DistributedDataParallel (which has no ``dtype``); the training
    forward must run through the wrapper (so gradients are synchronised) and give the same result."""
    import torch.distributed as dist

    unet = tiny_parts["unet"]
    cn = DragAnythingControlNetModel.from_unet(unet, entity_channels=16, encoder_block_out_channels=(16, 8, 8, 16))
    _randomise_outputs(cn)
    x, img, emb, ids, t = _inputs(unet, b=1)
    v, c, r = _entities(t=8)
    conds = {"gaussian": render_conditions("gaussian", c, r, 64, 64)["gaussian"][None]}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(cn)
        out = controlled_prediction(unet, wrapped, x, img, emb, ids, t, conditions=conds, entities=[EntityInputs(v, c, r)])
        out.float().pow(2).mean().backward()
    finally:
        dist.destroy_process_group()
    with torch.no_grad():
        bare = controlled_prediction(unet, cn, x, img, emb, ids, t, conditions=conds, entities=[EntityInputs(v, c, r)])
    assert torch.allclose(out.detach(), bare, atol=1e-6)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in cn.parameters())
