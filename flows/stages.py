"""Flows ``generate`` and ``evaluate``: fan benchmark items out to Ray, write the tables.

Thin wiring over ``tasks.generate`` and ``tasks.evaluate``. Each Ray task handles a
chunk of items (the model or feature backbone loads once per task) and writes
its own rows, so whatever finished survives a crash and a re-run skips it.
"""

from __future__ import annotations

import json

from prefect import flow, task
from prefect.futures import as_completed
from prefect_ray.context import remote_options
from tqdm import tqdm

from core.config import Config, load_config
from core.tables import Workdir, now_utc
from core.runtime import ray_task_options
from flows.runtime import ProjectRayTaskRunner, orchestration
from tasks import evaluate as ev
from tasks import generate as gen
from tasks.controller import NO_CONTROL


class UnknownCheckpoint(ValueError):
    pass


def resolve_checkpoint(wd: Workdir, checkpoint_id: str) -> dict:
    """The ``checkpoints`` row of an id; the model-free generators register themselves."""
    if checkpoint_id in gen.REFERENCE_GENERATORS:
        wd.append("checkpoints", [gen.reference_checkpoint_row(checkpoint_id)])
    if checkpoint_id.endswith(NO_CONTROL):
        # The same model with control switched off: the baseline a trained controller must beat.
        parent = resolve_checkpoint(wd, checkpoint_id[: -len(NO_CONTROL)])
        config = json.loads(parent["config"])
        config["model"]["conditioning_scale"] = 0.0
        row = {**parent, "checkpoint_id": checkpoint_id, "parent": parent["checkpoint_id"], "config": json.dumps(config),
               "config_hash": f"{parent['config_hash']}{NO_CONTROL}", "created_at": now_utc()}
        wd.append("checkpoints", [row])
    table = wd.read("checkpoints")
    row = table[table["checkpoint_id"] == checkpoint_id]
    if row.empty:
        known = ", ".join(sorted(table["checkpoint_id"])) or "none yet"
        raise UnknownCheckpoint(
            f"checkpoint '{checkpoint_id}' is not in {wd.url}/tables/checkpoints (known: {known}); "
            f"train one with `draganything train`, or use 'static' or 'warp'"
        )
    return row.iloc[0].to_dict()


def _chunks(xs: list, size: int) -> list[list]:
    return [xs[i : i + size] for i in range(0, len(xs), size)]


@task(name="generate-items")
def generate_chunk(workdir: str, checkpoint: dict, benchmark: str, item_ids: list[str], cfg: Config) -> dict:
    rows, rejects = gen.generate_items(workdir, checkpoint, benchmark, item_ids, cfg)
    wd = Workdir(workdir)
    return {"items": len(item_ids), "samples": wd.append("samples", rows), "rejects": wd.append("rejects", rejects)}


@flow(name="generate", task_runner=ProjectRayTaskRunner())
def generate_flow(checkpoint: str, benchmark: str, workdir: str, config: str = "tiny", overrides: list[str] | None = None, progress: bool = True) -> dict:
    cfg = load_config(config, overrides)
    wd = Workdir(workdir)
    ckpt = resolve_checkpoint(wd, checkpoint)
    items, bad = gen.load_benchmark(wd, benchmark, cfg)
    seeds = set(cfg.generate.seeds)
    done = {}
    for cid, b, item, seed in wd.keys("samples"):
        if cid == checkpoint and b == benchmark:
            done.setdefault(item, set()).add(seed)
    todo = [i.item_id for i in items if not seeds <= done.get(i.item_id, set())]
    todo += [item for item, _ in bad]  # their rejects are written by the task
    summary = {"items": len(items) + len(bad), "skipped": len(items) + len(bad) - len(todo), "samples": 0, "rejects": 0}
    with remote_options(**ray_task_options(cfg.runtime)):
        futures = [generate_chunk.submit(workdir, ckpt, benchmark, c, cfg) for c in _chunks(todo, cfg.generate.items_per_task)]
    with tqdm(total=len(todo), unit="item", desc=f"generate {checkpoint}/{benchmark}", disable=not progress) as bar:
        for fut in as_completed(futures):
            out = fut.result()
            summary["samples"] += out["samples"]
            summary["rejects"] += out["rejects"]
            bar.update(out["items"])
    return summary


@task(name="objmc-items")
def objmc_chunk(workdir: str, checkpoint_id: str, benchmark: str, item_ids: list[str], cfg: Config) -> int:
    return Workdir(workdir).append("objmc", ev.objmc_items(workdir, checkpoint_id, benchmark, item_ids, cfg))


@task(name="video-features")
def features_chunk(workdir: str, refs: list, cfg: Config) -> int:
    return ev.cache_features(workdir, refs, cfg)


@task(name="metrics")
def metrics_task(workdir: str, checkpoint_id: str, benchmark: str, cfg: Config) -> int:
    return Workdir(workdir).append("metrics", ev.summarize(workdir, checkpoint_id, benchmark, cfg))


@flow(name="evaluate", task_runner=ProjectRayTaskRunner())
def evaluate_flow(checkpoint: str, benchmark: str, workdir: str, config: str = "tiny", overrides: list[str] | None = None, progress: bool = True) -> dict:
    cfg = load_config(config, overrides)
    wd = Workdir(workdir)
    resolve_checkpoint(wd, checkpoint)
    samples = wd.read("samples")
    samples = samples[(samples["checkpoint_id"] == checkpoint) & (samples["benchmark"] == benchmark)]
    if samples.empty:
        raise ValueError(f"no samples of '{checkpoint}' on '{benchmark}' in {wd.url}; run `draganything generate` first")
    scored = {(c, b, i) for c, b, i, _ in wd.keys("objmc")}
    items = sorted(set(samples["item_id"]))
    todo = [i for i in items if (checkpoint, benchmark, i) not in scored]
    done = {m for c, b, m, _ in wd.keys("metrics") if c == checkpoint and b == benchmark}
    if not todo and "objmc" in done:
        return {"items": len(items), "metrics_written": 0, "skipped": True}  # nothing new since the last evaluation
    bench_items, _ = gen.load_benchmark(wd, benchmark, cfg, items)
    refs = ev.feature_refs(samples, bench_items)
    size = cfg.evaluate.items_per_task
    with remote_options(**ray_task_options(cfg.runtime)):
        futures = [objmc_chunk.submit(workdir, checkpoint, benchmark, c, cfg) for c in _chunks(todo, size)]
        futures += [features_chunk.submit(workdir, c, cfg) for c in _chunks(refs, size)]
        with tqdm(total=len(futures), unit="task", desc=f"evaluate {checkpoint}/{benchmark}", disable=not progress) as bar:
            for _ in as_completed(futures):
                bar.update(1)
        written = metrics_task.submit(workdir, checkpoint, benchmark, cfg).result()
    metrics = wd.read("metrics")
    metrics = metrics[(metrics["checkpoint_id"] == checkpoint) & (metrics["benchmark"] == benchmark)]
    return {
        "items": len(items),
        "metrics_written": written,
        **{f"{m.metric}[{m.backbone}]": round(m.value, 4) for m in metrics.itertuples()},
    }


def run_generate(checkpoint: str, benchmark: str, workdir: str, config: str = "tiny", overrides: list[str] | None = None, **kw) -> dict:
    cfg = load_config(config, overrides)
    with orchestration(cfg.runtime):
        return generate_flow(checkpoint=checkpoint, benchmark=benchmark, workdir=workdir, config=config, overrides=overrides, **kw)


def run_evaluate(checkpoint: str, benchmark: str, workdir: str, config: str = "tiny", overrides: list[str] | None = None, **kw) -> dict:
    cfg = load_config(config, overrides)
    with orchestration(cfg.runtime):
        return evaluate_flow(checkpoint=checkpoint, benchmark=benchmark, workdir=workdir, config=config, overrides=overrides, **kw)
