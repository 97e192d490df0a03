"""Controller training on the tiny size: learning, frozen parts, loss mask, resume, bad checkpoints, idempotent rows."""

import shutil

import numpy as np
import pytest
import torch

from core.config import load_config
from core.tables import Workdir
from model import training as T
from model.pipeline import build_pipeline
from tasks.train import CheckpointError, controller_loss, preprocess_in_process, resolve_resume, run_training, save_checkpoint, train_loop
from tasks.train_data import batch_for_step, load_clips

from .conftest import FAST, overriding


def _copy(labelled, tmp_path) -> str:
    dst = tmp_path / "w"
    shutil.copytree(labelled, dst)
    return str(dst)


def _setup(workdir, overrides=()):
    cfg = load_config("tiny", [*FAST, *overrides])
    preprocess_in_process(str(workdir), cfg)
    return cfg, build_pipeline(cfg.model), load_clips(Workdir(workdir), cfg)


def test_steps_lower_the_loss_on_a_fixed_batch_and_only_the_controller_moves(labelled):
    cfg, pipe, clips = _setup(labelled)
    batch = batch_for_step(clips, 0, cfg)
    frozen = {n: {k: v.clone() for k, v in getattr(pipe, n).state_dict().items()} for n in ("unet", "vae", "image_encoder")}
    ctrl0 = {k: v.clone() for k, v in pipe.controlnet.state_dict().items()}
    pipe.controlnet.train().requires_grad_(True)
    opt = torch.optim.AdamW(pipe.controlnet.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        loss = controller_loss(pipe, pipe.controlnet, batch, cfg, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    for name, before in frozen.items():
        after = getattr(pipe, name).state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), f"{name} changed"
        assert not any(p.requires_grad for p in getattr(pipe, name).parameters())
    assert any(not torch.equal(ctrl0[k], v) for k, v in pipe.controlnet.state_dict().items())


def test_loss_mask_gives_no_gradient_outside_entities(labelled):
    cfg, pipe, clips = _setup(labelled)
    # A batch whose entity subset leaves part of the frame out (stuff can cover all of it).
    batch = next(b for b in (batch_for_step(clips, s, cfg) for s in range(50)) if 0 < b.mask.mean() < 0.5)
    target = batch.latents.clone().requires_grad_(True)
    pred = torch.randn_like(batch.latents)
    T.masked_mse(pred, target, batch.mask).backward()
    g = target.grad.abs().sum(2, keepdim=True)  # (B, T, 1, h, w)
    assert float(g[batch.mask == 0].max()) == 0.0
    assert float(g[batch.mask > 0].min()) > 0.0
    # And the training loss really uses it: switching the mask off changes the loss.
    on_cfg, off_cfg = (cfg.model_copy(update={"train": cfg.train.model_copy(update={"loss_mask": m})}) for m in (True, False))
    on = controller_loss(pipe, pipe.controlnet, batch, on_cfg, torch.Generator().manual_seed(1))
    off = controller_loss(pipe, pipe.controlnet, batch, off_cfg, torch.Generator().manual_seed(1))
    assert float(on.detach()) != pytest.approx(float(off.detach()))


def _log(workdir):
    log = Workdir(workdir).read("train_log").sort_values("step")
    return dict(zip(log["step"], log["loss"]))


def test_resume_reproduces_the_uninterrupted_run(labelled, tmp_path):
    straight = _copy(labelled, tmp_path / "a")
    cfg = load_config("tiny", FAST)
    run_training(straight, cfg, steps=4, progress=False)
    full = _log(straight)
    assert sorted(full) == [1, 2, 3, 4]

    interrupted = _copy(labelled, tmp_path / "b")
    first = run_training(interrupted, cfg, steps=2, progress=False)
    again = run_training(interrupted, cfg, steps=4, progress=False)  # the same run, continued
    assert again["run"] == first["run"] and again["trained_steps"] == 2
    part = _log(interrupted)
    for s in (3, 4):
        assert part[s] == pytest.approx(full[s], rel=1e-5, abs=1e-7), (s, part[s], full[s])

    explicit = _copy(labelled, tmp_path / "c")
    run_training(explicit, cfg, steps=2, progress=False)
    ckpt = resolve_resume(Workdir(explicit), "latest")
    assert ckpt["step"] == 2
    run_training(explicit, cfg, resume=ckpt["checkpoint_id"], steps=2, progress=False)
    resumed = _log(explicit)
    for s in (3, 4):
        assert resumed[s] == pytest.approx(full[s], rel=1e-5, abs=1e-7)
    # A finished run is not trained again.
    assert run_training(straight, cfg, steps=4, progress=False)["trained_steps"] == 0


def test_the_cosine_schedule_decays_the_learning_rate_to_5_percent_at_the_runs_last_step(labelled, tmp_path):
    assert [round(T.lr_factor(s, 5, cosine=True), 4) for s in range(5)] == [1.0, 0.8609, 0.525, 0.1891, 0.05]
    assert [T.lr_factor(s, 5, cosine=False, warmup=2) for s in range(3)] == [0.5, 1.0, 1.0]
    workdir = _copy(labelled, tmp_path)
    cfg = load_config("tiny", overriding(FAST, "train.cosine=true"))
    run_training(workdir, cfg, steps=4, progress=False)
    log = Workdir(workdir).read("train_log").sort_values("step")
    # each row logs the rate the next step uses; the last steps run at the floor
    assert log["lr"].tolist() == pytest.approx([1e-3 * T.lr_factor(s, 4, cosine=True) for s in (1, 2, 3, 4)])
    assert log["lr"].iloc[-1] == pytest.approx(5e-5)


def test_corrupt_or_missing_checkpoint_is_a_clear_error_and_good_ones_stay(labelled, tmp_path):
    workdir = _copy(labelled, tmp_path)
    cfg = load_config("tiny", FAST)
    out = run_training(workdir, cfg, steps=2, progress=False)
    wd = Workdir(workdir)
    good = resolve_resume(wd, out["latest"])
    folder = tmp_path / "w" / good["path"]
    before = {p.name: p.read_bytes() for p in (folder / "controlnet").iterdir()}
    save_checkpoint(wd, good["checkpoint_id"], build_pipeline(cfg.model).controlnet, {"x": 1}, cfg)  # a retried save
    assert {p.name: p.read_bytes() for p in (folder / "controlnet").iterdir()} == before

    (folder / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is damaged"):
        run_training(workdir, cfg, resume=good["checkpoint_id"], steps=1, progress=False)
    (folder / "state.pt").unlink()
    with pytest.raises(CheckpointError, match=r"is incomplete: .*state\.pt is missing"):
        run_training(workdir, cfg, resume=good["checkpoint_id"], steps=1, progress=False)
    with pytest.raises(CheckpointError, match="not in"):
        run_training(workdir, cfg, resume="nope", steps=1, progress=False)


def test_retried_steps_write_each_row_once(labelled, tmp_path):
    workdir = _copy(labelled, tmp_path)
    cfg, pipe, clips = _setup(workdir)
    wd = Workdir(workdir)
    for _ in range(2):  # the same steps twice, as a retried task would
        train_loop(wd, cfg, pipe, pipe.controlnet, clips, start_step=0, steps=2, progress=False, run="run-retry")
    log, ckpts = wd.read("train_log"), wd.read("checkpoints")
    assert sorted(log["step"]) == [1, 2] and not log.duplicated(["checkpoint_id", "step"]).any()
    assert list(ckpts["checkpoint_id"]) == ["run-retry-s000002"]


def test_resume_auto_trains_from_scratch_on_a_fresh_workdir_then_continues_from_the_latest(labelled, tmp_path):
    """The weekly deployment's `resume: auto`: its first run on a fresh workdir bootstraps instead of failing."""
    cfg = load_config("tiny", FAST)
    wd = _copy(labelled, tmp_path)
    with pytest.raises(CheckpointError, match="--resume latest: no trained checkpoint"):
        run_training(wd, cfg, resume="latest", steps=2, progress=False)
    first = run_training(wd, cfg, resume="auto", steps=2, progress=False)
    assert first["trained_steps"] == 2 and first["step"] == 2
    second = run_training(wd, cfg, resume="auto", steps=2, progress=False)
    assert second["run"] != first["run"] and second["step"] == 4 and second["trained_steps"] == 2
    rows = Workdir(wd).read("checkpoints").set_index("checkpoint_id")
    assert rows.loc[second["latest"], "parent"] in set(rows.index)
