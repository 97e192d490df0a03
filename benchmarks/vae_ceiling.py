"""What a base model's VAE lets ObjMC see: the real val clips round-tripped through it.

    .venv/bin/python benchmarks/vae_ceiling.py --workdir demo/work [--base PATH] [--set k=v ...]

A generator that made exactly the real clip's latents would still be decoded by this
VAE at the model's size, then tracked there. So the ObjMC of the real clip (1) downscaled
to the model's size, and (2) encoded and decoded by the VAE there, is the best
any controller on this base can score. Printed beside static (no motion): when (2) is
near static, no controller on this base can beat control-off on ObjMC.
Default base: the newest one the tiny profile fitted in the workdir (``base/``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.config import load_config  # noqa: E402 - after the sys.path line that makes the repository importable
from core.media import load_cached_clip, resize_clip  # noqa: E402 - after the sys.path line that makes the repository importable
from core.tables import Workdir  # noqa: E402 - after the sys.path line that makes the repository importable
from eval.objmc import score_video  # noqa: E402 - after the sys.path line that makes the repository importable
from eval.trackers import tracker_for  # noqa: E402 - after the sys.path line that makes the repository importable
from model.pipeline import build_pipeline  # noqa: E402 - after the sys.path line that makes the repository importable
from tasks.generate import load_suite  # noqa: E402 - after the sys.path line that makes the repository importable
from tasks.train_data import encode_clip  # noqa: E402 - after the sys.path line that makes the repository importable


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--base", help="SVD-layout folder; default: the newest under WORKDIR/base")
    ap.add_argument("--suite", default="sample")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    wd = Workdir(args.workdir)
    base = args.base or str(max(Path(wd.local_path("base")).iterdir(), key=lambda p: p.stat().st_mtime))
    cfg = load_config("tiny", [*args.overrides, f"model.base_model_path={base}"])
    pipe = build_pipeline(cfg.model)
    items, _ = load_suite(wd, args.suite, cfg)
    tracker = tracker_for(cfg.evaluate.tracker)
    hw = (cfg.model.height, cfg.model.width)
    errors: dict[str, list] = {"real clip": [], f"real clip at {hw[0]}x{hw[1]}": [], "VAE round trip": [], "static": []}
    for it in items:
        real, ids = load_cached_clip(wd, it.reference)
        real, ids = real[: it.trajectories.shape[1]], ids[: it.trajectories.shape[1]]
        small, _ = resize_clip(real, ids, hw)  # what training encodes
        # encoded as training does, decoded as generation does
        latents = encode_clip(pipe, small)[None]
        with torch.no_grad():
            decoded = pipe.decode_latents(latents, len(small), len(small))
        rec = (np.clip(pipe.video_processor.postprocess_video(video=decoded, output_type="np")[0], 0, 1) * 255).round().astype(np.uint8)
        # tracked at the model's size, as generated videos are
        videos = (real, small, rec, np.repeat(real[:1], len(real), 0))
        for name, video in zip(errors, videos):
            score, _ = score_video(it.item_id, video, it.trajectories, it.entity_ids, it.visible, gt_hw=it.hw, eval_hw=it.orig_hw,
                                   tracker=tracker, grid_size=cfg.evaluate.grid_size, add_centers=cfg.evaluate.add_centers)
            for e in score.entities:
                errors[name].extend(e.per_frame)
    print(f"base: {base}; {len(items)} items of '{args.suite}'")
    print("| video | ObjMC px |\n|---|---|")
    for name, e in errors.items():
        print(f"| {name} | {np.nanmean(e):.2f} |")


if __name__ == "__main__":
    main()
