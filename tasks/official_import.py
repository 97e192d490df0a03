"""``draganything import-official PATH``: the official DragAnything controller as a checkpoint of this workdir.

The weights are converted (``model.official``) into this project's layout and written as
``checkpoints/<id>/controlnet`` (the layout the train stage writes), with a ``checkpoints`` row of
kind ``imported`` whose config is the workdir's with ``model.encoder: official`` and the widths read
from the weights, and records the source. Generation, evaluation and the dashboard then use it as
they use a trained controller; ``--resume`` from it fine-tunes it. Importing the same weights again
changes nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

from core import checkpoints as ckpts
from core.config import Config
from core.tables import Workdir
from tasks.checkpoint_files import save_checkpoint


def _digest(file: Path) -> str:
    """Of the weights file's bytes: importing the same file again finds its checkpoint."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()[:12]


def _base_shape(cfg: Config):
    """The base UNet's config (the attention heads are not in the weights) and its VAE's factor; a real base's
    weights are not loaded."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    from model.tiny import SVD_LAYOUT, load_base_unet, require_layout, tiny_sizes, vae_factor

    m = cfg.model
    if m.base_model_path:
        folder = require_layout(m.base_model_path, ("unet/config.json", "vae/config.json"), SVD_LAYOUT)
        unet = SimpleNamespace(**UNetSpatioTemporalConditionModel.load_config(folder / "unet"))
        return unet, vae_factor(AutoencoderKLTemporalDecoder.load_config(folder / "vae"))
    unet, factor = load_base_unet(None, tiny_sizes(m))
    return unet.config, factor


def import_official(workdir: str, cfg: Config, source: str) -> dict:
    """Convert the official controller at ``source`` (its folder or weights file) into a checkpoint; returns its row."""
    from model.official import controller_from_official, encoder_widths, official_weights_file, read_official_weights

    wd = Workdir(workdir)
    file = official_weights_file(source)
    cid = f"official-{_digest(file)}"
    if (ckpts.read(wd)["checkpoint_id"] == cid).any():
        return {"checkpoint_id": cid, "imported": False, "source": str(file)}
    state = read_official_weights(file)
    entity, widths = encoder_widths(state)
    model = controller_from_official(state, *_base_shape(cfg))
    settings = cfg.model.model_copy(update={"encoder": "official", "conditioning": "entity+gaussian", "entity_channels": entity,
                                            "encoder_channels": widths})
    cfg = cfg.model_copy(update={"model": settings})
    path = save_checkpoint(wd, cid, model, {"optimizer": None, "scheduler": None, "step": 0, "run": cid}, cfg)
    wd.append("checkpoints", [ckpts.imported_row(cid, cfg, path, str(file.resolve()))])
    return {"checkpoint_id": cid, "imported": True, "source": str(file.resolve()), "path": path}
