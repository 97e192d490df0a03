"""Flow ``labels``: VIPSeg-layout videos -> ``labels`` (+ ``rejects``) tables.

Thin wiring: pick the videos not labelled yet, fan chunks out as Ray tasks, show
progress. Each task writes its own rows, so whatever finished survives a crash.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect_ray.context import remote_options

from core.config import LabelsSettings, ModelSettings, load_config
from core.runtime import node_id, ray_task_options
from core.tables import Workdir
from core.vipseg import Category, load_categories, read_split_lines
from flows.runtime import TASK_RETRIES, ProjectRayTaskRunner, chunks, collect, gather
from tasks.embeddings import pending_embeddings
from tasks.labels import VideoRef, label_videos
from tasks.labels_pending import pending_videos


@task(name="label-videos", **TASK_RETRIES)
def label_chunk(root: str, refs: list[VideoRef], cfg: LabelsSettings, categories: dict[int, Category], workdir_url: str) -> dict:
    rows, rejects = label_videos(root, refs, cfg, categories, workdir_url)
    wd = Workdir(workdir_url)
    written = wd.append("labels", rows)
    rejected = wd.append("rejects", rejects)
    return {"videos": len(refs), "rows": written, "rejects": rejected, "node": node_id()}


@task(name="embedding-extractor", **TASK_RETRIES)
def extractor_id(model: ModelSettings) -> str:
    """The id of the configured entity-feature extractor (loads the backbone once, in a worker)."""
    from model.entity_features import build_extractor

    return build_extractor(model).extractor_id


@task(name="embed-entities", **TASK_RETRIES)
def embed_chunk(workdir_url: str, rows: list[dict], model: ModelSettings) -> dict:
    from tasks.embeddings import embed_videos

    out = embed_videos(workdir_url, rows, model)
    return {"videos": len({r["video_id"] for r in rows}), "rows": Workdir(workdir_url).append("entity_embeddings", out)}


@flow(name="labels", task_runner=ProjectRayTaskRunner())
def labels_flow(
    data_root: str,
    split: str,
    workdir_url: str,
    config: str = "tiny",
    overrides: list[str] | None = None,
    dataset: str = "sample",
    retry_rejects: bool = False,
    relabel: bool = False,
    progress: bool = True,
) -> dict:
    cfg = load_config(config, overrides)
    root = Path(data_root)
    wd = Workdir(workdir_url)
    names, repeated = read_split_lines(root, split)
    refs = [VideoRef(dataset, split, v) for v in names]
    todo, retried = pending_videos(wd, refs, cfg.labels, retry_rejects=retry_rejects, relabel=relabel)
    categories = load_categories(root)
    size = cfg.labels.chunk_size
    summary = {"videos": len(refs), "skipped": len(refs) - len(todo), "rows": 0, "rejects": 0}
    if retried:
        summary["retried"] = retried  # rejects or labels made with other labels settings, tried again
    if repeated:
        summary["repeated_in_split_file"] = sorted(repeated)
    with remote_options(**ray_task_options(cfg.runtime)):
        futures = [label_chunk.submit(str(root), c, cfg.labels, categories, workdir_url) for c in chunks(todo, size)]
    gather(futures, summary, ("rows", "rejects"), "videos", len(todo), f"labels {dataset}/{split}", "video", progress)

    if cfg.labels.embeddings:
        with remote_options(**ray_task_options(cfg.runtime)):
            extractor = extractor_id.submit(cfg.model).result()
            videos = pending_embeddings(wd, dataset, split, extractor)
            futures = [embed_chunk.submit(workdir_url, sum(c, []), cfg.model) for c in chunks(videos, size)]
        summary["embeddings"] = sum(out["rows"] for out in collect(futures, f"embeddings {dataset}/{split}"))
        summary["extractor"] = extractor
    return summary
