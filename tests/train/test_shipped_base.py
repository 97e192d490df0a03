"""The shipped tiny base (model/tiny_base/): it loads as the tiny profile's base, matches the record of its
fit, stays small, names the missing file and the command that remakes it; `draganything fit-base` writes
such a folder, reproducibly from its seed."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from core.config import load_config
from flows.cli import app
from model.pipeline import build_pipeline
from model.tiny import (
    SHIPPED_BASE,
    MissingWeightsError,
    load_tiny_base,
    tiny_sizes,
    tiny_unet_config,
    tiny_vae_config,
    weights_fingerprint,
)


def test_the_tiny_profile_loads_the_shipped_base_and_it_matches_its_record():
    cfg = load_config("tiny")
    assert cfg.model.tiny.pretrained and not cfg.train.fit_base.enabled, "the demo loads the shipped base, it does not fit one"
    pipe = build_pipeline(cfg.model)
    record = json.loads((SHIPPED_BASE / "fit.json").read_text())
    for name in ("unet", "vae", "image_encoder"):
        assert weights_fingerprint(getattr(pipe, name)) == record["fingerprints"][name], f"{name} is not the recorded fit"
    sizes = tiny_sizes(cfg.model)
    for part, want in (("unet", tiny_unet_config(sizes)), ("vae", tiny_vae_config(sizes))):
        have = getattr(pipe, part).config
        for k, v in want.items():
            if k not in ("scaling_factor", "sample_size"):
                assert json.loads(json.dumps(have[k])) == json.loads(json.dumps(v)), f"{part}.{k}"
    assert record["model_tiny"] == cfg.model.tiny.model_dump(mode="json") | {"pretrained": record["model_tiny"]["pretrained"]}
    assert pipe.vae.config.scaling_factor != pytest.approx(0.18215), "fitted: unit-variance latents"
    size = sum(f.stat().st_size for f in SHIPPED_BASE.rglob("*") if f.is_file())
    assert size < 20e6, f"the shipped base is {size / 1e6:.1f} MB"
    assert record["command"].startswith("draganything fit-base"), "the record says how to make it again"


def test_the_shipped_base_reconstructs_frames_and_random_weights_do_not():
    """A fitted VAE is what makes motion visible: its round trip must be far better than random weights'."""
    from core.sample_data import make_scene, render

    cfg = load_config("tiny")
    frames = render(make_scene(3, 2, seed=5))[0]
    import cv2

    x = torch.from_numpy(cv2.resize(frames[0], (cfg.model.width, cfg.model.height), interpolation=cv2.INTER_AREA))
    x = x.permute(2, 0, 1)[None].float() / 127.5 - 1
    errors = {}
    for pretrained in (True, False):
        m = cfg.model.model_copy(update={"tiny": cfg.model.tiny.model_copy(update={"pretrained": pretrained})})
        vae = build_pipeline(m).vae
        with torch.no_grad():
            rec = vae.decode(vae.encode(x).latent_dist.mode(), num_frames=1).sample
        errors[pretrained] = float(((rec - x) ** 2).mean())
    assert errors[True] < 0.02 < errors[False], errors


def test_a_missing_file_of_the_base_names_it_where_it_looked_and_how_to_remake_it(tmp_path):
    copy = tmp_path / "tiny_base"
    shutil.copytree(SHIPPED_BASE, copy)
    (copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    sizes = tiny_sizes(load_config("tiny").model)
    with pytest.raises(MissingWeightsError) as err:
        load_tiny_base(sizes, copy)
    msg = str(err.value)
    assert str(copy / "vae" / "diffusion_pytorch_model.safetensors") in msg and "draganything fit-base" in msg
    assert "\n" not in msg and msg.count(". ") == 0, "one sentence"


def test_a_base_fitted_for_other_sizes_is_refused_by_name():
    cfg = load_config("tiny", ["model.tiny.unet_channels=[64,64]"])
    with pytest.raises(MissingWeightsError, match=r"unet block_out_channels=\[32, 64\] \(asked \[64, 64\]\)"):
        build_pipeline(cfg.model)


FIT_QUICK = ["--videos", "2", "--variants", "1", "--set", "train.fit_base.vae_steps=3", "--set", "train.fit_base.unet_steps=3",
             "--set", "train.fit_base.batch_size=1"]


def test_fit_base_writes_a_loadable_folder_reproducibly_from_its_seed(tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = tmp_path / name
        r = CliRunner().invoke(app, ["fit-base", "--out", str(out), "--seed", str(seed), *FIT_QUICK])
        assert r.exit_code == 0, r.output
        runs[name] = json.loads((out / "fit.json").read_text())
    sizes = tiny_sizes(load_config("tiny").model)
    parts = load_tiny_base(sizes, tmp_path / "a")
    assert {n: weights_fingerprint(parts[n]) for n in ("unet", "vae", "image_encoder")} == runs["a"]["fingerprints"]
    assert runs["a"]["fingerprints"] == runs["b"]["fingerprints"], "same seed, same weights"
    assert runs["a"]["fingerprints"]["unet"] != runs["c"]["fingerprints"]["unet"], "another seed, other weights"
    assert runs["a"]["fit_base"]["unet_steps"] == 3 and runs["a"]["data"]["videos"] == 2
    assert "--seed 0" in runs["a"]["command"] and "train.fit_base.unet_steps=3" in runs["a"]["command"]
    assert not any(p.name.startswith(".a-") for p in tmp_path.iterdir()), "no temp folder left behind"


def test_fit_base_refuses_a_real_svd(tmp_path):
    r = CliRunner().invoke(app, ["fit-base", "--out", str(tmp_path / "x"), "--set", f"model.base_model_path={tmp_path}"])
    assert r.exit_code == 2 and "real SVD" in r.output
    assert not Path(tmp_path / "x").exists()


@pytest.mark.slow
def test_a_built_wheel_carries_the_shipped_base(tmp_path):
    """A non-editable install gets model/tiny_base/ (package data), so the demo needs no fit and no download."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
                   check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p.relative_to(root)) for p in SHIPPED_BASE.rglob("*") if p.is_file()}
    assert shipped and shipped <= names, sorted(shipped - names)


def test_controller_training_runs_on_the_base_that_generation_loads():
    """Training reads only the base UNet (``load_base_unet``); it must be the shipped one the pipeline and the
    preprocess stage load, not random weights of the same sizes (a controller trained against another UNet
    steers nothing at generation). With ``pretrained=false`` both are the seed's random weights."""
    from model.tiny import load_base_unet

    cfg = load_config("tiny")
    for pretrained in (True, False):
        m = cfg.model.model_copy(update={"tiny": cfg.model.tiny.model_copy(update={"pretrained": pretrained})})
        trained_on, factor = load_base_unet(None, tiny_sizes(m))
        generated_with = build_pipeline(m)
        assert weights_fingerprint(trained_on) == weights_fingerprint(generated_with.unet), f"pretrained={pretrained}"
        assert factor == 2 ** (len(generated_with.vae.config.block_out_channels) - 1) == m.tiny.vae_downsample
    record = json.loads((SHIPPED_BASE / "fit.json").read_text())
    assert weights_fingerprint(load_base_unet(None, tiny_sizes(cfg.model))[0]) == record["fingerprints"]["unet"]


def test_the_preprocess_cache_key_follows_the_shipped_base_files(tmp_path, monkeypatch):
    """Caches encoded with one shipped base are not read with another (a refitted base changes the key)."""
    import model.tiny as tiny
    from tasks.preprocess import cache_key

    cfg = load_config("tiny")
    before = cache_key(cfg)
    copy = tmp_path / "tiny_base"
    shutil.copytree(SHIPPED_BASE, copy)
    cfgjson = copy / "unet" / "config.json"
    cfgjson.write_text(cfgjson.read_text().replace("{", '{"_refit": 1, ', 1))
    monkeypatch.setattr(tiny, "SHIPPED_BASE", copy)
    assert cache_key(cfg) != before


def test_conditionings_that_read_the_same_files_share_one_preprocess_cache():
    """entity and entity+gaussian need the entity vectors, none and gaussian do not: two caches, not four."""
    from tasks.preprocess import cache_key

    key = {c: cache_key(load_config("tiny", [f"model.conditioning={c}"])) for c in ("none", "gaussian", "entity", "entity+gaussian")}
    assert key["entity"] == key["entity+gaussian"] != key["gaussian"] == key["none"]
