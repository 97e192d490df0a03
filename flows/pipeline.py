"""Flow ``pipeline``: labels -> train -> generate -> evaluate, as one unattended run.

Every stage skips what the tables say is done, so a re-run of a finished pipeline
does no work, and a crashed one resumes from what was written. Parameters pick
what to (re)do: the nightly run evaluates every checkpoint that has no metrics
yet; the weekly run trains on from the latest checkpoint first.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger

from core.checkpoints import to_evaluate
from core.config import load_config
from core.tables import Workdir
from flows.evaluate import evaluate_flow
from flows.generate import generate_flow
from flows.labels import labels_flow
from flows.runtime import ProjectRayTaskRunner

STAGES = ("labels", "train", "generate", "evaluate")


@flow(name="pipeline", task_runner=ProjectRayTaskRunner())
def pipeline_flow(
    workdir: str,
    data_root: str | None = None,
    dataset: str = "sample",
    config: str = "tiny",
    overrides: list[str] | None = None,
    stages: list[str] | None = None,
    suites: list[str] | None = None,
    checkpoints: list[str] | None = None,
    select: Literal["missing", "latest", "all"] = "missing",
    references: bool = True,
    baselines: bool = True,
    train_steps: int | None = None,
    resume: str | None = None,
    progress: bool = False,
) -> dict:
    """Run the chosen stages (default: all) on the chosen suites (default: sample); returns what each did."""
    log = get_run_logger()
    cfg = load_config(config, overrides)  # a bad value fails here, before any work
    stages = list(STAGES) if stages is None else stages
    suites = ["sample"] if suites is None else suites
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; stages: {', '.join(STAGES)}")
    wd = Workdir(workdir)
    report: dict = {}
    common = dict(config=config, overrides=overrides, progress=progress)

    if "labels" in stages:
        if not data_root:
            raise ValueError("the labels stage needs data_root (a VIPSeg-layout folder)")
        fit = cfg.train.fit_base
        splits = ["train", "val"] + ([fit.split] if fit.enabled and fit.split not in (None, "train", "val") else [])
        report["labels"] = {
            split: labels_flow(data_root=data_root, split=split, workdir=workdir, dataset=dataset, **common) for split in splits
        }

    if "train" in stages:
        from flows.train import train_flow  # torch is imported only by runs that train

        report["train"] = train_flow(workdir=workdir, resume=resume, steps=train_steps, **common)

    for suite in suites:
        ids = checkpoints or to_evaluate(wd, suite, select, references, baselines)
        log.info(f"{suite}: checkpoints to generate/evaluate: {ids or 'none'}")
        for cid in ids:
            key = f"{cid}/{suite}"
            if "generate" in stages:
                report.setdefault("generate", {})[key] = generate_flow(checkpoint=cid, suite=suite, workdir=workdir, **common)
            if "evaluate" in stages:
                report.setdefault("evaluate", {})[key] = evaluate_flow(checkpoint=cid, suite=suite, workdir=workdir, **common)
    return report
