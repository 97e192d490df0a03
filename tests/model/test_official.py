"""The official controller's tensors load into this project's layout (``model.encoder: official``), and the
controlled output is what the official conditioning network computes from them.

``official_controlnet_keys.tsv``: every tensor of the official ``DragAnythingSDVModel`` at SVD's default
config with its shape (685 tensors, 684,999,873 parameters)."""

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNetSpatioTemporalConditionModel

from model.controlnet import EntityInputs
from model.maps import entity_maps, gaussian_maps
from model.official import PREFIX, controller_from_official, to_project_keys

TABLE = Path(__file__).with_name("official_controlnet_keys.tsv")


def _table() -> dict[str, tuple[int, ...]]:
    rows = [line.rstrip("\n").split("\t") for line in TABLE.read_text().splitlines() if line and not line.startswith("#")]
    return {k: ast.literal_eval(s) for k, s in rows}


def test_the_key_table_is_the_official_controller():
    table = _table()
    assert len(table) == 685 and sum(torch.Size(s).numel() for s in table.values()) == 684_999_873


def test_every_official_tensor_lands_at_full_size_with_its_shape():
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel()  # SVD img2vid's config
    state = {k: torch.empty(s, device="meta") for k, s in _table().items()}
    model = controller_from_official(state, unet.config)
    got = model.state_dict()
    assert len(got) == 685  # strict both ways: no official tensor left over, none of ours left out
    # the only change of shape: the Gaussian branch's 3 equal input channels read as one
    assert got["cond_encoders.gaussian.conv_in.weight"].shape == (16, 1, 3, 3)
    assert sum(p.numel() for p in model.parameters()) == 684_999_873 - 16 * 2 * 9


def test_a_damaged_official_state_dict_is_refused_in_one_sentence():
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel()
    state = {k: torch.empty(s, device="meta") for k, s in _table().items()}
    del state["controlnet_mid_block.weight"]
    with pytest.raises(ValueError, match="1 missing"):
        controller_from_official(state, unet.config)


# --- narrow widths: every key of the table, random values, the output checked -------------------------

E, WIDTHS = 8, (4, 8, 8, 16)


@pytest.fixture(scope="module")
def narrow_unet():
    """SVD img2vid's UNet shape (every block, 2 layers each) at narrow widths."""
    torch.manual_seed(0)
    return UNetSpatioTemporalConditionModel(block_out_channels=(32, 64, 96, 96), num_attention_heads=(2, 4, 4, 4),
                                            cross_attention_dim=32, addition_time_embed_dim=8,
                                            projection_class_embeddings_input_dim=24, num_frames=3).eval()


def _narrow_official_state(unet):
    """Every key of the table, at the tiny UNet's widths, with random values (zero convs included)."""
    from model.pipeline import _fresh_controlnet

    class S:
        conditioning, entity_channels, encoder_channels, encoder = "entity+gaussian", E, WIDTHS, "official"

    ours = _fresh_controlnet(S, unet, 8, seed=0).state_dict()
    c0, c3, out = WIDTHS[0], WIDTHS[3], unet.config.block_out_channels[0]
    g = torch.Generator().manual_seed(0)
    state = {}
    for key in _table():
        if not key.startswith(PREFIX):
            shape = ours[key].shape  # a KeyError: the table names a tensor this controller lacks
        else:
            name, leaf = key[len(PREFIX):].rsplit(".", 1)
            if name in ("conv_in",):
                co, ci = c0, 3
            elif name in ("conv_out", "conv_out_feature"):
                co, ci = out, c3
            else:
                branch, i = name.split(".")
                i = int(i)
                w = WIDTHS if branch == "blocks" else (E, E, c3, c3)
                ci, co = w[i // 2], w[i // 2 + (i % 2)]
            shape = (co, ci, 3, 3) if leaf == "weight" else (co,)
        state[key] = torch.randn(shape, generator=g) * 0.2
    return state


def _official_embedding(state, gauss3, entity):
    """The official ``ControlNetConditioningEmbeddingSVD.forward``, written from the tensors: 3x3 convolutions,
    padding 1, stride 2 for the odd blocks, SiLU after each but the last."""
    def conv(x, name, stride=1):
        return F.conv2d(x, state[PREFIX + name + ".weight"], state[PREFIX + name + ".bias"], stride=stride, padding=1)

    a = F.silu(conv(gauss3, "conv_in"))
    for i in range(6):
        a = F.silu(conv(a, f"blocks.{i}", 2 if i % 2 else 1))
    b = entity
    for i in range(6):
        b = F.silu(conv(b, f"blocks_feature.{i}", 2 if i % 2 else 1))
    return conv(a, "conv_out") + conv(b, "conv_out_feature")


@pytest.mark.parametrize("path", ["dense", "fast"])
def test_the_imported_controller_computes_the_official_conditioning_and_residuals(narrow_unet, path):
    unet = narrow_unet
    state = _narrow_official_state(unet)
    model = controller_from_official(state, unet.config).eval()
    assert set(model.state_dict()) == set(to_project_keys(state))
    t, h, w = 3, 64, 64
    g = torch.Generator().manual_seed(1)
    centers = torch.rand(t, 2, 2, generator=g) * 60
    radii = torch.tensor([14.0, 6.0])
    vectors = torch.randn(2, E, generator=g)
    gauss = gaussian_maps(centers, radii, h, w)  # (T, 1, H, W)
    dense = entity_maps(vectors, centers, radii, h, w)
    want = _official_embedding(state, gauss.expand(-1, 3, -1, -1), dense)
    conds = {"gaussian": gauss[None]} | ({"entity": dense[None]} if path == "dense" else {})
    ents = [EntityInputs(vectors, centers, radii)] if path == "fast" else None
    with torch.no_grad():
        got = model.encode_conditions(conds, ents, h, w, t)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        # the residuals: the controller run on its own encoders = run on the reference embedding
        x = torch.randn(1, t, 8, h // 8, w // 8, generator=g)
        emb = torch.randn(1, 1, unet.config.cross_attention_dim, generator=g)
        ids = torch.tensor([[6.0, 128.0, 0.02]])
        own = model(x, 0.5, emb, ids, conditions=conds, entities=ents, return_dict=False)
        ref = model(x, 0.5, emb, ids, encoded_conditions=want, return_dict=False)
    for a, b in zip([*own[0], own[1]], [*ref[0], ref[1]]):  # the embeddings' float rounding, carried through the blocks
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5 * max(1.0, float(b.abs().max())))
    assert float(own[1].abs().max()) > 0  # the zero convs hold random values: the check sees the control
