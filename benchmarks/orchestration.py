"""Orchestration overhead: a finished pipeline re-run, and the Prefect + Ray fan-out cost.

    .venv/bin/python benchmarks/orchestration.py [--skip-pipeline]

1. ``pipeline`` on the sample data (tiny profile, every stage), then the same call
   again: the re-run must skip everything (goal: under 10% of the first run).
2. 100 trivial items through Prefect tasks on Ray: one task per item, and
   batched (10 items per task, what the stages do): seconds per item amortised
   (goal: under 0.2 s per item).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from prefect import flow, task
from prefect.futures import wait

from core.config import load_config
from flows.runtime import ProjectRayTaskRunner, orchestration


@task
def trivial(items: list[int]) -> int:
    return sum(items)


@flow(task_runner=ProjectRayTaskRunner())
def fan_out(n: int, per_task: int) -> int:
    futures = [trivial.submit(list(range(i, min(i + per_task, n)))) for i in range(0, n, per_task)]
    wait(futures)
    return sum(f.result() for f in futures)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--items", type=int, default=100)
    args = ap.parse_args()
    cfg = load_config("tiny")
    with orchestration(cfg.runtime):
        print("| fan-out of trivial items | tasks | wall s | s per item |")
        print("|---|---|---|---|")
        fan_out(4, 1)  # warm the workers
        for per_task in (1, 10):
            t0 = time.perf_counter()
            fan_out(args.items, per_task)
            dt = time.perf_counter() - t0
            print(f"| {args.items} items, {per_task} per task | {-(-args.items // per_task)} | {dt:.2f} | {dt / args.items:.3f} |")

        if not args.skip_pipeline:
            from core.sample_data import write_sample_dataset
            from flows.pipeline import pipeline_flow

            with tempfile.TemporaryDirectory() as tmp:
                write_sample_dataset(f"{tmp}/data")
                kw = dict(workdir_url=f"{tmp}/work", data_root=f"{tmp}/data", dataset="sample")
                t0 = time.perf_counter()
                pipeline_flow(**kw)
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                pipeline_flow(**kw)
                again = time.perf_counter() - t0
                print()
                print("| pipeline on the sample data | wall s |")
                print("|---|---|")
                print(f"| first run | {first:.1f} |")
                print(f"| re-run (nothing to do) | {again:.1f} ({100 * again / first:.1f}% of the first) |")


if __name__ == "__main__":
    main()
