"""Flow ``generate``: a checkpoint's videos for every item of a suite -> ``conditions`` + ``samples`` (+ ``rejects``).

Thin wiring over ``tasks.generate``: each Ray task handles a chunk of items (the
model loads once per task) and writes its own rows, so whatever finished survives
a crash and a re-run skips it.
"""

from __future__ import annotations

from prefect import flow, task
from prefect_ray.context import remote_options

from core.checkpoints import resolve
from core.config import Config, load_config
from core.runtime import node_id, ray_task_options
from core.suites import SUITES
from core.tables import Workdir
from flows.runtime import TASK_RETRIES, ProjectRayTaskRunner, chunks, gather, use_reserved_cpus
from tasks import generate as gen


@task(name="generate-items", **TASK_RETRIES)
def generate_chunk(workdir_url: str, checkpoint: dict, suite: str, item_ids: list[str], cfg: Config) -> dict:
    use_reserved_cpus(cfg.runtime.task_num_cpus)
    rows, conditions, rejects = gen.generate_items(workdir_url, checkpoint, suite, item_ids, cfg)
    wd = Workdir(workdir_url)
    wd.append("conditions", conditions)  # what each video was asked to do, before the video counts as done
    samples = wd.append("samples", rows)
    made = [(gen.STAGE, gen.reject_item(r["checkpoint_id"], suite, r["item_id"], s)) for r in rows for s in (r["seed"], None)]
    if made:  # an item that failed before and succeeds now has no open reject left
        wd.delete("rejects", made)
    return {"items": len(item_ids), "samples": samples, "rejects": wd.append("rejects", rejects), "node": node_id()}


def no_items_reason(wd: Workdir, suite: str) -> str:
    """One sentence for a suite with no items (e.g. labels written under another dataset name): not a silent 0."""
    spec = SUITES.get(suite)
    if spec is None or spec.kind != "labels":
        return f"suite '{suite}' has no items in {wd.url}"
    have = sorted({f"{d}/{s}" for d, s in zip(*(wd.read("labels")[c] for c in ("dataset", "split")))})
    return (f"suite '{suite}' reads the labels of dataset '{spec.dataset}', split '{spec.split}', and {wd.url} has none "
            f"(labels there: {', '.join(have) or 'none'}); run `draganything labels --dataset {spec.dataset} --split {spec.split}`")


@flow(name="generate", task_runner=ProjectRayTaskRunner())
def generate_flow(checkpoint: str, suite: str, workdir_url: str, config: str = "tiny", overrides: list[str] | None = None,
                  progress: bool = True) -> dict:
    cfg = load_config(config, overrides)
    wd = Workdir(workdir_url)
    ckpt = resolve(wd, checkpoint)
    todo, n_items = gen.pending_items(wd, checkpoint, suite, cfg)
    if not n_items:
        raise ValueError(no_items_reason(wd, suite))
    summary = {"items": n_items, "skipped": n_items - len(todo), "samples": 0, "rejects": 0}
    with remote_options(**ray_task_options(cfg.runtime)):
        futures = [generate_chunk.submit(workdir_url, ckpt, suite, c, cfg) for c in chunks(todo, cfg.generate.items_per_task)]
    return gather(futures, summary, ("samples", "rejects"), "items", len(todo), f"generate {checkpoint}/{suite}", "item", progress)
