"""Flow ``labels``: VIPSeg-layout videos -> ``labels`` (+ ``rejects``) tables.

Thin wiring: pick the videos not labelled yet, fan chunks out as Ray tasks, show
progress. Each task writes its own rows, so whatever finished survives a crash.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.futures import as_completed
from prefect_ray.context import remote_options
from tqdm import tqdm

from core.config import LabelsSettings, ModelSettings, load_config
from core.runtime import ray_task_options
from core.tables import Workdir
from core.vipseg import Category, load_categories, read_split_lines
from flows.labels_digest import pending_videos
from flows.runtime import ProjectRayTaskRunner, orchestration
from tasks.labels import VideoRef, label_videos


@task(name="label-videos")
def label_chunk(root: str, refs: list[VideoRef], cfg: LabelsSettings, categories: dict[int, Category], workdir: str) -> dict:
    rows, rejects = label_videos(root, refs, cfg, categories, workdir)
    wd = Workdir(workdir)
    written = wd.append("labels", rows)
    rejected = wd.append("rejects", rejects)
    return {"videos": len(refs), "rows": written, "rejects": rejected}


@task(name="embedding-extractor")
def extractor_id(model: ModelSettings) -> str:
    """The id of the configured entity-feature extractor (loads the backbone once, in a worker)."""
    from model.entity_features import build_extractor

    return build_extractor(model).extractor_id


@task(name="embed-entities")
def embed_chunk(workdir: str, rows: list[dict], model: ModelSettings) -> dict:
    from tasks.embeddings import embed_videos

    out = embed_videos(workdir, rows, model)
    return {"videos": len({r["video_id"] for r in rows}), "rows": Workdir(workdir).append("entity_embeddings", out)}


def pending_embeddings(wd: Workdir, dataset: str, split: str, extractor: str) -> list[list[dict]]:
    """Label rows (grouped by video) whose entities have no vector from ``extractor`` yet."""
    import pyarrow.compute as pc

    labels = wd.read("labels", columns=["dataset", "split", "video_id", "entity_id", "frames_path"],
                     filter=(pc.field("dataset") == dataset) & (pc.field("split") == split))
    have = {(d, v, e) for d, v, e, x in wd.keys("entity_embeddings") if x == extractor}
    todo = labels[[(d, v, e) not in have for d, v, e in zip(labels["dataset"], labels["video_id"], labels["entity_id"])]]
    return [g.to_dict("records") for _, g in todo.groupby("video_id", sort=True)]


@flow(name="labels", task_runner=ProjectRayTaskRunner())
def labels_flow(
    data_root: str,
    split: str,
    workdir: str,
    config: str = "tiny",
    overrides: list[str] | None = None,
    dataset: str | None = None,
    retry_rejects: bool = False,
    relabel: bool = False,
    progress: bool = True,
) -> dict:
    cfg = load_config(config, overrides)
    root = Path(data_root)
    dataset = dataset or root.resolve().name
    wd = Workdir(workdir)
    names, repeated = read_split_lines(root, split)
    refs = [VideoRef(dataset, split, v) for v in names]
    todo, retried = pending_videos(wd, refs, cfg.labels, retry_rejects=retry_rejects, relabel=relabel)
    categories = load_categories(root)
    size = cfg.labels.chunk_size
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    summary = {"videos": len(refs), "skipped": len(refs) - len(todo), "rows": 0, "rejects": 0}
    if retried:
        summary["retried"] = retried  # rejects or labels made with other labels settings, tried again
    if repeated:
        summary["repeated_in_split_file"] = sorted(repeated)
    with remote_options(**ray_task_options(cfg.runtime)):
        futures = [label_chunk.submit(str(root), c, cfg.labels, categories, workdir) for c in chunks]
    bar = tqdm(total=len(todo), unit="video", desc=f"labels {dataset}/{split}", disable=not progress)
    for fut in as_completed(futures):
        out = fut.result()
        summary["rows"] += out["rows"]
        summary["rejects"] += out["rejects"]
        bar.update(out["videos"])
    bar.close()

    if cfg.labels.embeddings:
        with remote_options(**ray_task_options(cfg.runtime)):
            extractor = extractor_id.submit(cfg.model).result()
            videos = pending_embeddings(wd, dataset, split, extractor)
            chunks = [sum(videos[i : i + size], []) for i in range(0, len(videos), size)]
            futures = [embed_chunk.submit(workdir, c, cfg.model) for c in chunks]
        summary["embeddings"] = sum(f.result()["rows"] for f in futures)
        summary["extractor"] = extractor
    return summary


def run_labels(data_root: str, split: str, workdir: str, config: str = "tiny", overrides: list[str] | None = None, **kwargs) -> dict:
    """Validate the config, then run the flow with a Prefect API and Ray ready (what the CLI calls)."""
    cfg = load_config(config, overrides)
    with orchestration(cfg.runtime):
        return labels_flow(data_root=data_root, split=split, workdir=workdir, config=config, overrides=overrides, **kwargs)
