"""The training stage: label tables -> controller checkpoints (+ ``checkpoints``, ``train_log``).

- The preprocess stage (``tasks.preprocess``) encodes every clip once, on the accelerators,
  into ``cache/train/``; ``tasks.train_data`` turns the caches into clips and batches (a
  pure function of (seed, step, rank), so a resumed run sees the batches an uninterrupted one would).
- ``train_loop``: AdamW on the controller only, through the frozen base UNet (the only base
  model a training rank loads); checkpoints every N steps (``tasks.checkpoint_files``); one
  function for one process and for each Ray Train (DDP) worker.

The tiny base fit (for the CPU demo) is ``tasks/fit_base.py``.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass

import numpy as np
import torch

from core import checkpoints as ckpts
from core.config import Config
from core.progress import line_bar
from core.tables import Workdir
from model import training as T
from model.tiny import DTYPES
from tasks.checkpoint_files import (  # noqa: F401 - re-exported: the stage's checkpoint API
    CheckpointError,
    checkpoint_sizes,
    load_checkpoint_state,
    prune_training_state,
    raw_weights_folder,
    save_checkpoint,
)
from tasks.fit_base import fit_tiny_base
from tasks.train_data import Batch, Clip, batch_for_step, load_clips  # noqa: F401 - re-exported: other modules import it from here
from tasks.train_step import controller_loss, optimizer_step  # noqa: F401 - controller_loss re-exported: the stage's loss

# --- checkpoints ---------------------------------------------------------------------


# --- the loop ------------------------------------------------------------------------


@dataclass
class TrainResult:
    run: str
    checkpoints: list[str]
    first_step: int
    last_step: int
    losses: list[float]


def train_loop(wd: Workdir, cfg: Config, pipe, controlnet, clips: list[Clip], start_step: int = 0, parent: str | None = None,
               state: dict | None = None, steps: int | None = None, progress: bool = True, run: str | None = None,
               ema_weights: list[torch.Tensor] | None = None) -> TrainResult:
    """Optimise the controller for ``steps`` steps from ``start_step``; checkpoint every N steps.

    ``pipe``: anything with the frozen base ``unet``; ``controlnet``: the trained (raw) weights;
    ``ema_weights``: the EMA to continue (a resumed run's ``controlnet/``), else a copy of the raw weights.
    """
    tr = cfg.train
    steps = tr.steps if steps is None else steps
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist else 0
    model = controlnet

    device = torch.device("cuda", torch.cuda.current_device()) if tr.use_gpu and torch.cuda.is_available() else torch.device("cpu")
    pipe.unet.to(device).eval().requires_grad_(False)  # the only base model training needs: the clips are encoded
    controlnet.to(device, DTYPES[tr.controller_dtype])
    controlnet.train().requires_grad_(True)
    if tr.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
        pipe.unet.enable_gradient_checkpointing()
    if dist:
        model = torch.nn.parallel.DistributedDataParallel(controlnet, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in controlnet.parameters() if p.requires_grad]
    masters = T.MasterWeights(params)  # what the optimizer steps: fp32 copies of bf16 weights, fp32 ones themselves
    end = start_step + steps  # the schedule's length: the run's last step (a resumed run keeps its place on it)
    opt = torch.optim.AdamW(masters.master, lr=tr.lr, weight_decay=tr.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: T.lr_factor(s, end, tr.cosine, tr.warmup_steps))
    ema = None
    if tr.ema_decay:  # kept in fp32 whatever the controller's dtype (a decay of 0.9999 is below bf16's resolution)
        ema = [e.detach().to(device, torch.float32).clone() for e in (ema_weights or masters.master)]
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:  # a checkpoint written before controlnet_raw/ existed
            ema = [e.to(device, torch.float32).clone() for e in state["ema"]]
    use_amp = tr.mixed_precision != "no" and torch.cuda.is_available()
    autocast = (lambda: torch.autocast("cuda", dtype=getattr(torch, "bfloat16" if tr.mixed_precision == "bf16" else "float16"))) if use_amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda") if use_amp and tr.mixed_precision == "fp16" else None

    run = run or ckpts.run_id(cfg, parent)
    made, losses, log_rows = [], [], []
    prev = parent
    bar = line_bar(total=steps, desc=f"train {run}", unit="step", disable=not progress or rank != 0, mininterval=10)
    for step in range(start_step, end):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(tr.grad_accum):
            batch = batch_for_step(clips, step * tr.grad_accum + micro, cfg, rank, device=device).to(device)
            gen = torch.Generator().manual_seed(hash((tr.seed, step, micro, rank)) & 0x7FFFFFFF)
            loss = controller_loss(pipe, model, batch, cfg, gen, autocast) / tr.grad_accum
            (scaler.scale(loss) if scaler else loss).backward()
            total += float(loss.detach())
        optimizer_step(opt, masters, scaler, tr.max_grad_norm, ema, tr.ema_decay)
        sched.step()
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
            state_out = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": done,
                         "rng": {"torch": torch.get_rng_state()}, "run": run}
            # generation uses the EMA weights; the raw ones are kept beside them, and resume continues from those
            weights, raw = (controlnet, None) if ema is None else (_WithParams(controlnet, params, ema), controlnet)
            path = save_checkpoint(wd, cid, weights, state_out, cfg, raw=raw)
            wd.append("train_log", log_rows)
            wd.append("checkpoints", [ckpts.trained_row(cid, prev, cfg, done, path)])
            _prune(wd, run, tr.keep_last)
            log_rows, prev = [], cid
            made.append(cid)
    bar.close()
    return TrainResult(run, made, start_step, end, losses)


def _prune(wd: Workdir, run: str, keep_last: int) -> None:
    """Only the run's last ``keep_last`` checkpoints keep their training state (``tasks.checkpoint_files``)."""
    table = wd.read("checkpoints", columns=["checkpoint_id", "step", "path"])
    mine = table[table["checkpoint_id"].str.startswith(run + "-") & table["path"].notna()].sort_values("step")
    prune_training_state(wd, list(dict.fromkeys(mine["path"])), keep_last)


class _WithParams:
    """``module`` as saved with ``values`` (the EMA) in its trainable ``params``: swapped in only while it is
    written, so no copy of the 685M-parameter controller is made on the device at a checkpoint."""

    def __init__(self, module, params: list[torch.Tensor], values: list[torch.Tensor]):
        self.module, self.params, self.values = module, params, values

    def save_pretrained(self, *args, **kwargs) -> None:
        held = [p.data for p in self.params]
        try:
            for p, v in zip(self.params, self.values):
                p.data = v if v.dtype == p.dtype else v.to(p.dtype)
            self.module.save_pretrained(*args, **kwargs)
        finally:
            for p, h in zip(self.params, held):
                p.data = h

# --- the stage ------------------------------------------------------------------------


def resolve_resume(wd: Workdir, resume: str) -> dict | None:
    """The row ``--resume`` names: a checkpoint id, ``latest`` (the newest trained controller), or ``auto``
    (the newest trained controller, None = from scratch when there is none: a schedule's first run on a fresh workdir)."""
    if resume == "auto":
        rows = ckpts.trained(wd)
        return rows[-1] if rows else None
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


def preprocess_in_process(workdir: str, cfg: Config) -> dict:
    """The preprocess stage in this process (one shard of every clip lacking a cache); its encoders are freed after."""
    from tasks.preprocess import cache_key, encode_clips, missing

    todo = missing(Workdir(workdir), cfg)
    out = encode_clips(workdir, cfg, todo) if todo else {"encoded": [], "embedded": 0, "key": cache_key(cfg)}
    gc.collect()
    return out


def with_base(cfg: Config, wd: Workdir, progress: bool, dist: bool, rank: int) -> Config:
    """The config with the tiny base fitted (``train.fit_base``, rank 0) and its folder as the base model."""
    if not cfg.train.fit_base.enabled:
        return cfg
    base = fit_tiny_base(wd, cfg, progress) if rank == 0 else None
    if dist:
        holder = [base]
        torch.distributed.broadcast_object_list(holder, src=0)
        base = holder[0]
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"base_model_path": wd.location(base)})})


@dataclass
class _Base:
    unet: torch.nn.Module


def run_training(workdir: str, cfg: Config, resume: str | None = None, steps: int | None = None, progress: bool = True,
                 cache_key: str | None = None) -> dict:
    """Train (or continue) one run; returns what was done. Re-running a finished run does nothing.

    ``cache_key``: the preprocess stage ran before (``flows/train.py``) and reported it; the run
    reads the caches and no file of the base but the UNet's. Without it, in one process, the
    missing caches are encoded here first; under DDP a rank that finds a cache missing stops
    with a clear error.
    """
    from model.controlnet import DragAnythingControlNetModel
    from model.pipeline import build_controlnet
    from model.tiny import load_base_unet, tiny_sizes

    wd = Workdir(workdir)
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist else 0
    steps = cfg.train.steps if steps is None else steps
    given = cfg  # the run id comes from the config as given, not the fitted base's location: one id wherever the workdir lives
    cfg = with_base(cfg, wd, progress, dist, rank)

    origin = resolve_resume(wd, resume) if resume else None
    run = ckpts.run_id(given, origin["checkpoint_id"] if origin else None)
    target = (int(origin["step"]) if origin else 0) + steps
    mine = [r for r in ckpts.run_checkpoints(wd, run) if r["kind"] == ckpts.TRAINED]
    start_row = mine[-1] if mine else origin
    start = int(start_row["step"]) if start_row else 0
    if start >= target and mine:
        return {"run": run, "trained_steps": 0, "checkpoints": [], "latest": start_row["checkpoint_id"], "step": start}

    prepared = {"encoded": [], "key": cache_key} if dist or cache_key else preprocess_in_process(workdir, cfg)
    clips = load_clips(wd, cfg, prepared["key"])
    m = cfg.model
    unet, factor = load_base_unet(m.base_model_path, tiny_sizes(m), torch_dtype=DTYPES[m.dtype])
    base = _Base(unet)
    state, ema_weights = None, None
    if start_row:
        state, folder = load_checkpoint_state(wd, start_row)
        controlnet = DragAnythingControlNetModel.from_pretrained(raw_weights_folder(folder), local_files_only=True)
        if cfg.train.ema_decay and (folder / "controlnet_raw").is_dir():
            ema = DragAnythingControlNetModel.from_pretrained(folder / "controlnet", local_files_only=True)
            ema_weights = [p.detach() for p in ema.parameters()]
    else:
        controlnet = build_controlnet(m, unet, factor)

    made = []
    if start_row is None and rank == 0:  # the untrained controller: the floor every trained one must beat
        cid = ckpts.checkpoint_id(run, 0)
        path = save_checkpoint(wd, cid, controlnet, {"optimizer": None, "scheduler": None, "step": 0, "run": run}, cfg)
        wd.append("checkpoints", [ckpts.trained_row(cid, None, cfg, 0, path)])
        made.append(cid)
    if state is not None and state.get("optimizer") is None:
        state = None  # a step-0 checkpoint has no optimizer yet
    parent = start_row["checkpoint_id"] if start_row else ckpts.checkpoint_id(run, 0)
    result = train_loop(wd, cfg, base, controlnet, clips, start_step=start, parent=parent, state=state,
                        steps=target - start, progress=progress, run=run, ema_weights=ema_weights)
    made += result.checkpoints
    return {"run": run, "trained_steps": target - start, "checkpoints": made, "latest": made[-1] if made else None,
            "step": target, "encoded": len(prepared["encoded"]), "loss_first": result.losses[0] if result.losses else None,
            "loss_last": float(np.mean(result.losses[-10:])) if result.losses else None}
