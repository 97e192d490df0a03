"""The training stage: label tables -> controller checkpoints (+ ``checkpoints``, ``train_log``).

- ``run_training``: the stage (what ``draganything train`` and the ``train`` flow run):
  the run's id, where it resumes, the untrained step-0 checkpoint, then the loop.
- ``controller_loss``: the masked EDM loss through the frozen UNet with the controller.
- ``train_loop``: AdamW on the controller only; checkpoints every N steps with the
  optimizer, scheduler, EMA and RNG state; one function for one process and for
  each Ray Train (DDP) worker.

Clips, their cache and the batches are ``tasks/train_data.py``; the tiny base fit
(for the CPU demo) is ``tasks/fit_base.py``.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core import checkpoints as ckpts
from core.config import Config
from core.tables import Workdir
from model import training as T
from model.maps import condition_channels
from model.unet_control import controlled_prediction
from tasks.fit_base import fit_tiny_base
from tasks.train_data import Batch, Clip, batch_for_step, conditioning_latents, load_clips

STAGE = "train"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read; the message says which file and what to do."""


# --- the step ----------------------------------------------------------------------


def controller_loss(pipe, controlnet, batch: Batch, cfg: Config, gen: torch.Generator, autocast=contextlib.nullcontext) -> torch.Tensor:
    """The masked EDM loss of one batch through the frozen UNet with the controller's residuals."""
    tr, g = cfg.train, cfg.generate
    edm = T.EDM(tr.p_mean, tr.p_std)
    B, device = batch.latents.shape[0], batch.latents.device
    sigma = edm.sample_sigmas(B, gen, device)
    noisy = T.add_noise(batch.latents, sigma, gen)
    _, _, c_in, c_noise = T.precondition(sigma)
    with torch.no_grad():
        image_latents = conditioning_latents(pipe, batch.pixels, g.noise_aug_strength, gen)
    ids = T.time_ids(g.fps, g.motion_bucket_id, g.noise_aug_strength, B, device)
    with autocast():
        pred = controlled_prediction(
            pipe.unet, controlnet, noisy * c_in.reshape(-1, 1, 1, 1, 1), image_latents, batch.embeddings, ids, c_noise,
            conditions=batch.conditions or None, entities=batch.entities, conditioning_scale=cfg.model.conditioning_scale,
            frame_chunk=cfg.model.frame_chunk,
        )
    denoised = T.denoise(pred.float(), noisy, sigma)
    return T.masked_mse(denoised, batch.latents, batch.mask if tr.loss_mask else None, T.loss_weight(sigma))


# --- checkpoints ---------------------------------------------------------------------


def save_checkpoint(wd: Workdir, cid: str, controlnet, state: dict, cfg: Config) -> str:
    """Write ``checkpoints/<id>/`` whole or not at all: a temp folder renamed into place."""
    rel = f"checkpoints/{cid}"

    def write(folder: Path) -> None:
        controlnet.save_pretrained(folder / "controlnet", safe_serialization=True)
        torch.save(state, folder / "state.pt")
        (folder / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))

    wd.write_dir_atomic(rel, write)  # a retried step never overwrites a good checkpoint
    return rel


def load_training_state(path: Path) -> dict:
    """``state.pt`` unpickled with ``weights_only=True``: tensors and containers, plus the numpy RNG state's types only."""
    allowed = [np.dtype, np.ndarray, np.dtypes.UInt32DType, np._core.multiarray._reconstruct]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint_state(wd: Workdir, row: dict) -> tuple[dict, Path]:
    """The training state of a ``checkpoints`` row; a clear error if it is missing or damaged."""
    if not row.get("path"):
        raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' has no weights (a reference generator); resume from a trained one")
    folder = Path(wd.local_path(row["path"]))
    state_file, weights = folder / "state.pt", folder / "controlnet" / "diffusion_pytorch_model.safetensors"
    for f in (state_file, weights):
        if not f.is_file():
            raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' is incomplete: {f} is missing; resume from another checkpoint")
    try:
        state = load_training_state(state_file)
        from safetensors import safe_open

        with safe_open(str(weights), "pt"):
            pass
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # garbage, not a pickle of foreign objects
            raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' is damaged (UnpicklingError reading {folder}); resume from another checkpoint") from None
        raise CheckpointError(
            f"checkpoint '{row['checkpoint_id']}': {state_file} holds objects other than a training state's (tensors, numbers, "
            "the RNG state), so it was not unpickled; resume from a checkpoint this pipeline wrote"
        ) from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise CheckpointError(f"checkpoint '{row['checkpoint_id']}' is damaged ({type(err).__name__} reading {folder}); resume from another checkpoint") from None
    return state, folder


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


# --- the loop ------------------------------------------------------------------------


@dataclass
class TrainResult:
    run: str
    checkpoints: list[str]
    first_step: int
    last_step: int
    losses: list[float]


def train_loop(wd: Workdir, cfg: Config, pipe, controlnet, clips: list[Clip], start_step: int = 0, parent: str | None = None,
               state: dict | None = None, steps: int | None = None, progress: bool = True, run: str | None = None) -> TrainResult:
    """Optimise the controller for ``steps`` steps from ``start_step``; checkpoint every N steps."""
    tr = cfg.train
    steps = tr.steps if steps is None else steps
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist else 0
    model = controlnet

    device = torch.device("cuda", torch.cuda.current_device()) if tr.use_gpu and torch.cuda.is_available() else torch.device("cpu")
    for part in (pipe.unet, pipe.vae, pipe.image_encoder):
        part.to(device).eval().requires_grad_(False)
    controlnet.to(device)
    controlnet.train().requires_grad_(True)
    if tr.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
        pipe.unet.enable_gradient_checkpointing()
    if dist:
        model = torch.nn.parallel.DistributedDataParallel(controlnet, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in controlnet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / tr.warmup_steps) if tr.warmup_steps else 1.0)
    ema = [p.detach().clone() for p in params] if tr.ema_decay else None
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema = [e.clone() for e in state["ema"]]
    use_amp = tr.mixed_precision != "no" and torch.cuda.is_available()
    autocast = (lambda: torch.autocast("cuda", dtype=getattr(torch, "bfloat16" if tr.mixed_precision == "bf16" else "float16"))) if use_amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda") if use_amp and tr.mixed_precision == "fp16" else None

    run = run or ckpts.run_id(cfg, parent)
    made, losses, log_rows = [], [], []
    prev = parent
    end = start_step + steps
    bar = tqdm(total=steps, desc=f"train {run}", unit="step", disable=not progress or rank != 0, mininterval=10)
    for step in range(start_step, end):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(tr.grad_accum):
            batch = batch_for_step(clips, step * tr.grad_accum + micro, cfg, rank).to(device)
            gen = torch.Generator().manual_seed(hash((tr.seed, step, micro, rank)) & 0x7FFFFFFF)
            loss = controller_loss(pipe, model, batch, cfg, gen, autocast) / tr.grad_accum
            (scaler.scale(loss) if scaler else loss).backward()
            total += float(loss.detach())
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, tr.max_grad_norm)
        (scaler.step(opt), scaler.update()) if scaler else opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema, params):
                    e.lerp_(p.detach(), 1 - tr.ema_decay)
        losses.append(total)
        done = step + 1
        seconds = time.perf_counter() - t0
        upcoming = ckpts.checkpoint_id(run, min(end, (done + tr.checkpoint_every - 1) // tr.checkpoint_every * tr.checkpoint_every))
        if done % tr.log_every == 0 or done == end:
            log_rows.append(dict(checkpoint_id=upcoming, step=done, loss=total, lr=sched.get_last_lr()[0], seconds=seconds,
                                 samples_per_s=tr.batch_size * tr.grad_accum / seconds))
        bar.set_postfix(loss=f"{total:.4f}", refresh=False)
        bar.update(1)
        if rank == 0 and (done % tr.checkpoint_every == 0 or done == end):
            cid = ckpts.checkpoint_id(run, done)
            state_out = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "ema": ema, "step": done,
                         "rng": _rng_state(), "run": run}
            weights = controlnet
            if ema is not None:  # generation uses the EMA weights; the raw ones live in the optimizer's state
                weights = _with_params(controlnet, ema)
            path = save_checkpoint(wd, cid, weights, state_out, cfg)
            wd.append("train_log", log_rows)
            wd.append("checkpoints", [ckpts.trained_row(cid, prev, cfg, done, path)])
            log_rows, prev = [], cid
            made.append(cid)
    bar.close()
    return TrainResult(run, made, start_step, end, losses)


def _with_params(module, values: list[torch.Tensor]):
    import copy

    clone = copy.deepcopy(module)
    with torch.no_grad():
        for p, v in zip([p for p in clone.parameters() if p.requires_grad], values):
            p.copy_(v)
    return clone


# --- the stage ------------------------------------------------------------------------


def resolve_resume(wd: Workdir, resume: str) -> dict:
    """The row ``--resume`` names: a checkpoint id, or ``latest`` (the newest trained controller)."""
    if resume == "latest":
        rows = ckpts.trained(wd)
        if not rows:
            raise CheckpointError(f"--resume latest: no trained checkpoint in {wd.url}; train from scratch first")
        return rows[-1]
    table = ckpts.read(wd)
    row = table[table["checkpoint_id"] == resume]
    if row.empty:
        raise CheckpointError(f"checkpoint '{resume}' is not in {wd.url}/tables/checkpoints; `draganything status -w {wd.url}` lists them")
    return row.iloc[0].to_dict()


def _ensure_embeddings(wd: Workdir, cfg: Config, extractor_id: str) -> int:
    from tasks.embeddings import embed_videos, pending_embeddings

    todo = sum(pending_embeddings(wd, cfg.train.dataset, cfg.train.split, extractor_id), [])
    return wd.append("entity_embeddings", embed_videos(wd.url, todo, cfg.model)) if todo else 0


def run_training(workdir: str, cfg: Config, resume: str | None = None, steps: int | None = None, progress: bool = True) -> dict:
    """Train (or continue) one run; returns what was done. Re-running a finished run does nothing."""
    from model.controlnet import DragAnythingControlNetModel
    from model.entity_features import build_extractor
    from model.pipeline import build_pipeline

    wd = Workdir(workdir)
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist else 0
    steps = cfg.train.steps if steps is None else steps
    if cfg.train.fit_base.enabled:
        base = fit_tiny_base(wd, cfg, progress) if rank == 0 else None
        if dist:
            holder = [base]
            torch.distributed.broadcast_object_list(holder, src=0)
            base = holder[0]
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"base_model_path": wd.local_path(base)})})

    origin = resolve_resume(wd, resume) if resume else None
    run = ckpts.run_id(cfg, origin["checkpoint_id"] if origin else None)
    target = (int(origin["step"]) if origin else 0) + steps
    mine = [r for r in ckpts.run_checkpoints(wd, run) if r["kind"] == ckpts.TRAINED]
    start_row = mine[-1] if mine else origin
    start = int(start_row["step"]) if start_row else 0
    if start >= target and mine:
        return {"run": run, "trained_steps": 0, "checkpoints": [], "latest": start_row["checkpoint_id"], "step": start}

    pipe = build_pipeline(cfg.model)
    state = None
    if start_row:
        state, folder = load_checkpoint_state(wd, start_row)
        pipe.controlnet = DragAnythingControlNetModel.from_pretrained(folder / "controlnet", local_files_only=True)
    extractor = None
    if "entity" in condition_channels(cfg.model.conditioning, cfg.model.entity_channels):
        extractor = build_extractor(cfg.model, base_parts=dict(unet=pipe.unet, vae=pipe.vae)).extractor_id
        if rank == 0:
            _ensure_embeddings(wd, cfg, extractor)
    if dist:
        torch.distributed.barrier()
    clips = load_clips(wd, cfg, pipe, extractor)

    made = []
    if start_row is None and rank == 0:  # the untrained controller: the floor every trained one must beat
        cid = ckpts.checkpoint_id(run, 0)
        path = save_checkpoint(wd, cid, pipe.controlnet, {"optimizer": None, "scheduler": None, "ema": None, "step": 0, "run": run}, cfg)
        wd.append("checkpoints", [ckpts.trained_row(cid, None, cfg, 0, path)])
        made.append(cid)
    if state is not None and state.get("optimizer") is None:
        state = None  # a step-0 checkpoint has no optimizer yet
    parent = start_row["checkpoint_id"] if start_row else ckpts.checkpoint_id(run, 0)
    result = train_loop(wd, cfg, pipe, pipe.controlnet, clips, start_step=start, parent=parent, state=state,
                        steps=target - start, progress=progress, run=run)
    made += result.checkpoints
    return {"run": run, "trained_steps": target - start, "checkpoints": made, "latest": made[-1] if made else None,
            "step": target, "loss_first": result.losses[0] if result.losses else None,
            "loss_last": float(np.mean(result.losses[-10:])) if result.losses else None}
