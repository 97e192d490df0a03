"""The official DragAnything controller's weights in this project's layout.

The official ``DragAnythingSDVModel`` (showlab/DragAnything, ``models/DragAnything.py``) is a ControlNet
copy of the SVD UNet's encoder whose names are this controller's (``conv_in``, ``time_embedding``,
``add_embedding``, ``down_blocks``, ``mid_block``, ``controlnet_down_blocks``, ``controlnet_mid_block``),
plus one ``controlnet_cond_embedding`` holding both conditioning branches. Here each branch is a
``ControlEncoder`` (``encoder_layout='official'``); ``to_project_keys`` renames its tensors:

* Gaussian branch: ``conv_in`` -> ``cond_encoders.gaussian.conv_in``, ``blocks.i`` -> ``...gaussian.body.{2i+1}``,
  ``conv_out`` -> ``...gaussian.conv_out``. The official Gaussian map is a grey image read as RGB (three equal
  channels); this project renders it once, so ``conv_in`` takes the sum of the three input channels'
  kernels (the same convolution on such maps).
* entity branch: ``blocks_feature.0`` (its first convolution reads the entity map) -> ``cond_encoders.entity.conv_in``,
  ``blocks_feature.i`` -> ``...entity.body.{2i-1}``, ``conv_out_feature`` -> ``...entity.conv_out``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .controlnet import DragAnythingControlNetModel

PREFIX = "controlnet_cond_embedding."
OFFICIAL_TIME_IDS = (6.0, 128.0, 0.02)  # the official pipeline's micro-conditioning, whatever its fps/motion arguments
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def to_project_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official controller state dict -> this project's names and shapes (see the module docstring)."""
    out = {}
    for key, value in state.items():
        if not key.startswith(PREFIX):
            out[key] = value
            continue
        name, leaf = key[len(PREFIX) :].rsplit(".", 1)
        if name == "conv_in":
            out[f"cond_encoders.gaussian.conv_in.{leaf}"] = value.sum(1, keepdim=True) if leaf == "weight" else value
        elif name == "conv_out":
            out[f"cond_encoders.gaussian.conv_out.{leaf}"] = value
        elif name == "conv_out_feature":
            out[f"cond_encoders.entity.conv_out.{leaf}"] = value
        elif name.startswith("blocks."):
            out[f"cond_encoders.gaussian.body.{2 * int(name.split('.')[1]) + 1}.{leaf}"] = value
        elif name.startswith("blocks_feature."):
            i = int(name.split(".")[1])
            out[f"cond_encoders.entity.{'conv_in' if i == 0 else f'body.{2 * i - 1}'}.{leaf}"] = value
        else:
            raise ValueError(f"unexpected official tensor '{key}': not part of DragAnythingSDVModel's conditioning embedding")
    return out


def to_official_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``to_project_keys`` (an ``official``-layout controller's tensors under the official names;
    the Gaussian ``conv_in`` split evenly over three equal input channels)."""
    inverse = {}
    for key, value in state.items():
        if not key.startswith("cond_encoders."):
            inverse[key] = value
            continue
        _, branch, rest = key.split(".", 2)  # cond_encoders, gaussian | entity, e.g. body.3.weight
        name, leaf = rest.rsplit(".", 1)
        if branch == "gaussian":
            if name == "conv_in":
                inverse[PREFIX + f"conv_in.{leaf}"] = value.expand(-1, 3, -1, -1) / 3 if leaf == "weight" else value
            elif name == "conv_out":
                inverse[PREFIX + f"conv_out.{leaf}"] = value
            else:
                inverse[PREFIX + f"blocks.{(int(name.split('.')[1]) - 1) // 2}.{leaf}"] = value
        elif name in ("conv_in", "conv_out"):
            inverse[PREFIX + f"{'blocks_feature.0' if name == 'conv_in' else 'conv_out_feature'}.{leaf}"] = value
        else:
            inverse[PREFIX + f"blocks_feature.{(int(name.split('.')[1]) + 1) // 2}.{leaf}"] = value
    return inverse


def encoder_widths(state: dict[str, torch.Tensor]) -> tuple[int, tuple[int, int, int, int]]:
    """(entity channels, Gaussian branch widths) read from an official state dict's shapes."""
    try:
        entity = state[PREFIX + "blocks_feature.0.weight"].shape[1]
        widths = tuple(state[PREFIX + k].shape[0] for k in ("conv_in.weight", "blocks.1.weight", "blocks.3.weight", "blocks.5.weight"))
    except KeyError as err:
        raise ValueError(f"not an official DragAnything controller: it has no tensor {err.args[0]}") from None
    return int(entity), widths  # type: ignore[return-value]


def controller_from_official(state: dict[str, torch.Tensor], unet_config, pixel_scale: int = 8) -> DragAnythingControlNetModel:
    """This project's controller holding exactly the official tensors; ``unet_config``: the SVD UNet's config
    (its attention heads are not in the weights); ``pixel_scale``: the base VAE's factor. Every tensor must land,
    with its shape."""
    entity, widths = encoder_widths(state)
    c = unet_config
    with torch.device("meta"):
        model = DragAnythingControlNetModel(
            in_channels=c.in_channels, down_block_types=tuple(c.down_block_types), block_out_channels=tuple(c.block_out_channels),
            addition_time_embed_dim=c.addition_time_embed_dim, projection_class_embeddings_input_dim=c.projection_class_embeddings_input_dim,
            layers_per_block=c.layers_per_block, cross_attention_dim=c.cross_attention_dim,
            transformer_layers_per_block=c.transformer_layers_per_block, num_attention_heads=c.num_attention_heads,
            num_frames=c.num_frames, conditioning="entity+gaussian", entity_channels=entity, encoder_block_out_channels=widths,
            encoder_layout="official", pixel_scale=pixel_scale,
        )
    mapped = to_project_keys(state)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(want) - set(mapped))
    extra = sorted(set(mapped) - set(want))
    wrong = sorted(k for k in set(want) & set(mapped) if tuple(mapped[k].shape) != want[k])
    if missing or extra or wrong:
        raise ValueError(f"the official weights do not fit an SVD controller of this base: {len(missing)} missing (first: "
                         f"{missing[:1]}), {len(extra)} unexpected ({extra[:1]}), {len(wrong)} of another shape ({wrong[:1]})")
    model.load_state_dict(mapped, strict=True, assign=True)
    return model


def official_weights_file(path: str | Path) -> Path:
    """The weights file of an official controller: ``path`` itself, or the weights in its diffusers folder."""
    p = Path(path)
    if p.is_dir():
        found = [p / f for f in WEIGHT_FILES if (p / f).is_file()]
        if not found:
            raise FileNotFoundError(f"no {' or '.join(WEIGHT_FILES)} in {p}; give the official controlnet folder (weijiawu/DragAnything "
                                    "on the Hugging Face Hub, its controlnet/ folder) or one of its weights files")
        p = found[0]
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist; give the official controlnet folder or its weights file")
    return p


def read_official_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an official controller (``official_weights_file``)."""
    p = official_weights_file(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    return torch.load(p, map_location="cpu", weights_only=True)
