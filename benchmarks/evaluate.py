"""Generate and evaluate speed and peak memory for N sample videos (memory should not grow with N).

    .venv/bin/python benchmarks/evaluate.py [--videos 100 1000] [--generator warp|tiny]

Videos are the sample benchmark's items times as many seeds as needed. Each
stage runs in-process (the plain functions the Ray tasks run), one core.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, labelled_workdir  # noqa: E402 - after the sys.path line that makes the repository importable

from core.checkpoints import reference_row, trained_row  # noqa: E402 - after the sys.path line that makes the repository importable
from core.config import load_config  # noqa: E402 - after the sys.path line that makes the repository importable
from core.tables import Workdir  # noqa: E402 - after the sys.path line that makes the repository importable
from tasks.evaluate import objmc_items, summarize  # noqa: E402 - after the sys.path line that makes the repository importable
from tasks.features import cache_features, feature_jobs  # noqa: E402 - after the sys.path line that makes the repository importable
from tasks.generate import generate_items, load_suite  # noqa: E402 - after the sys.path line that makes the repository importable


def _tiny_checkpoint(wd: Workdir, cfg) -> dict:
    from model.pipeline import build_pipeline

    build_pipeline(cfg.model).controlnet.save_pretrained(wd.local_path("checkpoints/tiny/controlnet"))
    row = trained_row("tiny", None, cfg, 0, "checkpoints/tiny")
    wd.append("checkpoints", [row])
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--generator", choices=["warp", "tiny"], default="warp")
    args = ap.parse_args()
    print("| videos | stage | videos/s | peak RSS increase (MB) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = labelled_workdir(Path(tmp), videos=12, splits=("val",))
        for n in args.videos:
            wd = Workdir(work)
            base = load_config("tiny")
            items = [i.item_id for i in load_suite(wd, "sample", base)[0]]
            seeds = list(range(-(-n // len(items))))
            cfg = load_config("tiny", {"generate.seeds": seeds, "generate.num_inference_steps": 4, "generate.max_guidance_scale": 1.0})
            name = f"{args.generator}-{n}"
            row = _tiny_checkpoint(wd, cfg) if args.generator == "tiny" else reference_row("warp")
            row = {**row, "checkpoint_id": name}
            wd.append("checkpoints", [row])
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                rows, conditions, _ = generate_items(work, row, "sample", items, cfg)
                dt = time.perf_counter() - t0
            wd.append("conditions", conditions)
            wd.append("samples", rows)
            print(f"| {len(rows)} | generate ({args.generator}) | {len(rows) / dt:.1f} | {mem.delta_mb:.0f} |", flush=True)

            with PeakRSS() as mem:
                t0 = time.perf_counter()
                wd.append("objmc", objmc_items(work, name, "sample", items, cfg)[0])
                dt = time.perf_counter() - t0
            print(f"| {len(rows)} | ObjMC (LK tracking) | {len(rows) / dt:.1f} | {mem.delta_mb:.0f} |", flush=True)

            samples = wd.read("samples")
            conditions = wd.read("conditions")
            refs = feature_jobs(samples[samples["checkpoint_id"] == name], conditions[conditions["checkpoint_id"] == name])
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                cache_features(work, refs, "sample", cfg)
                dt = time.perf_counter() - t0
            print(f"| {len(rows)} | FID + FVD features (fallback backbones, cached per video) | {len(refs) / dt:.1f} | {mem.delta_mb:.0f} |", flush=True)

            with PeakRSS() as mem:
                t0 = time.perf_counter()
                metrics, _ = summarize(work, name, "sample", cfg)
                dt = time.perf_counter() - t0
            print(f"| {len(rows)} | metrics + bootstrap CIs (from the cache) | {len(rows) / dt:.1f} | {mem.delta_mb:.0f} |", flush=True)
            assert {m["metric"] for m in metrics} == {"objmc", "fid", "fvd"}


if __name__ == "__main__":
    main()
