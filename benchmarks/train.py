"""Training throughput and peak memory of the controller (tiny profile, CPU).

    .venv/bin/python benchmarks/train.py [--steps 40]

Where a GPU is lent, run it there with the full-size controller (`--config
svd-vipseg --set model.base_model_path=...`) for bf16 and gradient checkpointing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, labelled_workdir  # noqa: E402 - after the sys.path line that makes the repository importable

from core.config import load_config  # noqa: E402 - after the sys.path line that makes the repository importable
from core.tables import Workdir  # noqa: E402 - after the sys.path line that makes the repository importable
from model.pipeline import build_pipeline  # noqa: E402 - after the sys.path line that makes the repository importable
from tasks.checkpoint_files import checkpoint_sizes  # noqa: E402 - after the sys.path line that makes the repository importable
from tasks.train import preprocess_in_process, train_loop  # noqa: E402 - after the sys.path line that makes the repository importable
from tasks.train_data import load_clips  # noqa: E402 - after the sys.path line that makes the repository importable


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, CUDA: {torch.cuda.is_available()}")
    print("| setting | frames x size | batch | samples/s | s/step | peak RSS increase (MB) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = labelled_workdir(Path(tmp), videos=8, splits=("train",))
        for batch, extra in ((1, []), (2, []), (2, ["model.encoder=dense"]), (2, ["train.gradient_checkpointing=true"])):
            cfg = load_config("tiny", [f"train.batch_size={batch}", "train.checkpoint_every=100000", *extra, *args.overrides])
            pipe = build_pipeline(cfg.model)
            preprocess_in_process(work, cfg)
            clips = load_clips(Workdir(work), cfg)
            train_loop(Workdir(work), cfg, pipe, pipe.controlnet, clips, steps=3, progress=False, run="warmup")
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                train_loop(Workdir(work), cfg, pipe, pipe.controlnet, clips, start_step=3, steps=args.steps, progress=False, run="bench")
                dt = time.perf_counter() - t0
            m = cfg.model
            label = "tiny" + (f" ({', '.join(extra)})" if extra else "")
            print(f"| {label} | {m.num_frames}x{m.height}x{m.width} | {batch} | {batch * args.steps / dt:.1f} | {dt / args.steps:.3f} | {mem.delta_mb:.0f} |")
        # what one checkpoint costs on disk (the last one keeps the training state; older ones only weights)
        folder = sorted(Path(work, "checkpoints").glob("bench-*"))[-1]
        print(f"\ncheckpoint {folder.name}: " + ", ".join(f"{k} {v / 2**20:.2f} MB" for k, v in checkpoint_sizes(folder).items()))
        print("the full-size controller's rows and checkpoint sizes: benchmarks/gpu.py on a GPU machine")


if __name__ == "__main__":
    main()
