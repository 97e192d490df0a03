"""`draganything import-official PATH`: the official controller's weights become a checkpoint (kind
'imported', its source recorded) that generation loads as it loads a trained one."""

import json

import numpy as np
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from core import checkpoints as ckpts
from core.config import load_config
from core.tables import Workdir
from flows.cli import app
from model.official import to_official_keys
from model.pipeline import _fresh_controlnet
from model.tiny import load_base_unet, tiny_sizes


def _official_folder(tmp_path, cfg):
    """Official-named weights that fit the tiny base (random values, zero convs included)."""
    unet, factor = load_base_unet(None, tiny_sizes(cfg.model))
    settings = cfg.model.model_copy(update={"encoder": "official"})
    state = _fresh_controlnet(settings, unet, factor, seed=0).state_dict()
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in state.items()}
    folder = tmp_path / "official" / "controlnet"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in to_official_keys(state).items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    return folder, state


def test_import_official_writes_an_imported_checkpoint_that_generation_loads(tmp_path):
    cfg = load_config("tiny")
    folder, state = _official_folder(tmp_path, cfg)
    wd_path = str(tmp_path / "work")
    runner = CliRunner()
    r = runner.invoke(app, ["import-official", str(folder), "-w", wd_path])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["imported"] and out["source"].endswith("diffusion_pytorch_model.safetensors")
    again = json.loads(runner.invoke(app, ["import-official", str(folder), "-w", wd_path]).output.strip().splitlines()[-1])
    assert again == {"checkpoint_id": out["checkpoint_id"], "imported": False, "source": out["source"]}  # idempotent

    wd = Workdir(wd_path)
    rows = [r for r in ckpts.trained(wd, with_weights=True) if r["checkpoint_id"] == out["checkpoint_id"]]
    assert len(rows) == 1 and rows[0]["kind"] == ckpts.IMPORTED
    config = json.loads(rows[0]["config"])
    assert config["source"] == out["source"] and config["model"]["encoder"] == "official"

    from tasks.controller import ControllerGenerator

    gen = ControllerGenerator.from_checkpoint(wd, rows[0], cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"device": "cpu"})}))
    loaded = gen.pipe.controlnet.state_dict()
    for k in ("cond_encoders.entity.conv_in.weight", "cond_encoders.gaussian.body.1.weight", "controlnet_mid_block.weight"):
        torch.testing.assert_close(loaded[k], state[k])
    img = (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)
    masks = np.zeros((1, 64, 64), bool)
    masks[0, 10:40, 10:40] = True
    frames = gen.pipe(img, masks, [[[25, 25], [40, 30]]], height=64, width=64, num_frames=8, num_inference_steps=2, seed=0).frames
    assert frames.shape == (1, 8, 64, 64, 3) and np.isfinite(frames).all()


def test_import_official_names_the_missing_file_in_one_sentence(tmp_path):
    r = CliRunner().invoke(app, ["import-official", str(tmp_path / "nothing"), "-w", str(tmp_path / "work")])
    assert r.exit_code == 2 and "does not exist" in r.output and r.output.count(".") <= 3
