"""Flow ``evaluate``: a checkpoint's samples of a suite -> ``objmc`` and ``metrics`` rows.

Thin wiring over ``tasks.evaluate`` and ``tasks.features``: ObjMC and the FID/FVD
features fan out over Ray tasks in chunks of items (each writes its own rows, rejects or
feature files), then one task recomputes the metrics from every scored item, replaces
the metric rows and keeps the old values in ``metrics_history``. A chunk that fails (after its
retries) fails the run before the metrics task: no metric is published from part of the items.
"""

from __future__ import annotations

from prefect import flow, task
from prefect_ray.context import remote_options

from core.checkpoints import resolve
from core.config import Config, load_config
from core.runtime import ray_task_options
from core.tables import Workdir
from flows.runtime import TASK_RETRIES, ProjectRayTaskRunner, chunks, collect, use_reserved_cpus
from tasks import evaluate as ev
from tasks import features as feats


@task(name="objmc-items", **TASK_RETRIES)
def objmc_chunk(workdir_url: str, checkpoint_id: str, suite: str, item_ids: list[str], cfg: Config) -> int:
    rows, rejects = ev.objmc_items(workdir_url, checkpoint_id, suite, item_ids, cfg)
    wd = Workdir(workdir_url)
    wd.append("rejects", rejects)
    return wd.replace("objmc", rows)  # an item with a new seed is re-summed over all its seeds


@task(name="video-features", **TASK_RETRIES)
def features_chunk(workdir_url: str, jobs: list, suite: str, cfg: Config) -> int:
    use_reserved_cpus(cfg.runtime.task_num_cpus)
    return feats.cache_features(workdir_url, jobs, suite, cfg)


@task(name="metrics", **TASK_RETRIES)
def metrics_task(workdir_url: str, checkpoint_id: str, suite: str, cfg: Config) -> int:
    """Recompute the metrics from every scored item; replace the rows, keep the old values as history."""
    rows, rejects = ev.summarize(workdir_url, checkpoint_id, suite, cfg)
    wd = Workdir(workdir_url)
    wd.append("rejects", rejects)
    wd.append("metrics_history", ev.history_rows(rows))
    return wd.replace("metrics", rows)


@flow(name="evaluate", task_runner=ProjectRayTaskRunner())
def evaluate_flow(checkpoint: str, suite: str, workdir_url: str, config: str = "tiny", overrides: list[str] | None = None,
                  progress: bool = True) -> dict:
    cfg = load_config(config, overrides)
    wd = Workdir(workdir_url)
    resolve(wd, checkpoint)
    work = ev.pending(wd, checkpoint, suite, cfg)
    if work.up_to_date:
        return {"items": len(work.items), "metrics_written": 0, "skipped": True}  # nothing new since the last evaluation
    size = cfg.evaluate.items_per_task
    with remote_options(**ray_task_options(cfg.runtime)):
        futures = [objmc_chunk.submit(workdir_url, checkpoint, suite, c, cfg) for c in chunks(work.objmc, size)]
        futures += [features_chunk.submit(workdir_url, c, suite, cfg) for c in chunks(work.features, size)]
        collect(futures, f"evaluate {checkpoint}/{suite}", progress=progress)  # a failed task fails the run: no metric from a part
        written = metrics_task.submit(workdir_url, checkpoint, suite, cfg).result()
    return {"items": len(work.items), "metrics_written": written, **ev.metric_values(wd, checkpoint, suite, cfg.evaluate.protocol)}
