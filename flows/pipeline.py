"""Flow ``pipeline``: labels -> train -> generate -> evaluate, as one unattended run.

Every stage skips what the tables say is done, so a re-run of a finished pipeline
does no work, and a crashed one resumes from what was written. Parameters pick
what to (re)do: the nightly run evaluates every checkpoint that has no metrics
yet; the weekly run trains on from the latest checkpoint first.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, get_run_logger

from core.checkpoints import to_evaluate
from core.config import load_config
from core.tables import Workdir
from flows.checks import STAGES
from flows.evaluate import evaluate_flow
from flows.generate import generate_flow
from flows.labels import labels_flow
from flows.runtime import ProjectRayTaskRunner


@flow(name="pipeline", task_runner=ProjectRayTaskRunner())
def pipeline_flow(
    workdir_url: str,
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
    wd = Workdir(workdir_url)
    report: dict = {}
    common = dict(config=config, overrides=overrides, progress=progress)

    at = "start"
    try:
        seconds = report.setdefault("seconds", {})  # wall time of each stage (generate and evaluate summed over suites)
        t0 = time.perf_counter()
        at = "labels"
        if "labels" in stages:
            if not data_root:
                raise ValueError("the labels stage needs data_root (a VIPSeg-layout folder)")
            fit = cfg.train.fit_base
            splits = ["train", "val"] + ([fit.split] if fit.enabled and fit.split not in (None, "train", "val") else [])
            report["labels"] = {
                split: labels_flow(data_root=data_root, split=split, workdir_url=workdir_url, dataset=dataset, **common) for split in splits
            }

            seconds["labels"] = round(time.perf_counter() - t0, 1)
        at = "train"
        if "train" in stages:
            from flows.train import train_flow  # torch is imported only by runs that train

            t0 = time.perf_counter()
            report["train"] = train_flow(workdir_url=workdir_url, resume=resume, steps=train_steps, **common)
            seconds["train"] = round(time.perf_counter() - t0, 1)

        evaluated: dict[str, list[str]] = {}
        for suite in suites:
            at = f"select {suite}"
            ids = checkpoints or to_evaluate(wd, suite, select, references, baselines)
            log.info(f"{suite}: checkpoints to generate/evaluate: {ids or 'none'}")
            for cid in ids:
                key = f"{cid}/{suite}"
                at = f"generate {key}"
                t0 = time.perf_counter()
                if "generate" in stages:
                    report.setdefault("generate", {})[key] = generate_flow(checkpoint=cid, suite=suite, workdir_url=workdir_url, **common)
                    seconds["generate"] = round(seconds.get("generate", 0.0) + time.perf_counter() - t0, 1)
                t0 = time.perf_counter()
                at = f"evaluate {key}"
                if "evaluate" in stages:
                    out = report.setdefault("evaluate", {})[key] = evaluate_flow(checkpoint=cid, suite=suite, workdir_url=workdir_url, **common)
                    seconds["evaluate"] = round(seconds.get("evaluate", 0.0) + time.perf_counter() - t0, 1)
                    if not out.get("skipped"):
                        evaluated.setdefault(suite, []).append(cid)
    except Exception as err:
        publish_failure(wd, at, err, report)  # the run's report says what failed, then the run fails
        raise
    report["verdicts"] = publish_report(wd, suites, evaluated)
    return report


REPORT_KEY = "draganything-run-report"


def publish_failure(wd: Workdir, stage: str, err: BaseException, report: dict) -> None:
    """A failed run's artifact (same key as a finished run's): which stage failed, the error, what finished before."""
    from prefect.artifacts import create_markdown_artifact

    done = [f"{stage_name} {key}" for stage_name in ("generate", "evaluate") for key in report.get(stage_name, {})]
    done = [s for s in ("labels", "train") if s in report] + done
    error = (str(err).strip().splitlines() or [repr(err)])[0]
    markdown = "\n".join([
        "# DragAnything run FAILED", "",
        f"- **failed at:** {stage}", f"- **error:** `{type(err).__name__}: {error}`",
        f"- **finished before it:** {', '.join(done) or 'nothing'}", "",
        "No metric was published from the failed stage: `draganything status` and the gate still show the previous values.",
    ])
    get_run_logger().error(f"run failed at {stage}: {type(err).__name__}: {error}")
    create_markdown_artifact(markdown=markdown, key=REPORT_KEY, description=f"{wd.url}: FAILED at {stage}")


def publish_report(wd: Workdir, suites: list[str], evaluated: dict[str, list[str]]) -> list[dict]:
    """The run's Prefect artifact (key ``draganything-run-report``): metrics, what was evaluated, verdicts."""
    from prefect.artifacts import create_markdown_artifact

    from tasks.verdicts import run_report

    markdown, verdicts = run_report(wd, suites, evaluated)
    done = sum(len(v) for v in evaluated.values())
    create_markdown_artifact(markdown=markdown, key=REPORT_KEY, description=f"{wd.url}: {done} checkpoint/suite pair(s) evaluated")
    return verdicts
