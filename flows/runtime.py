"""Where flows run: one Prefect API for the flow and every Ray worker, and one Ray.

Ray itself (start-up, task options) is ``core/runtime.py``; this module adds Prefect.

Without ``PREFECT_API_URL`` a Ray worker that runs a Prefect task would start a
temporary Prefect server of its own (seconds per worker). So the driver makes sure
there is one API — the configured one, or a local SQLite-backed server it starts —
and hands its URL to the workers through Ray's runtime environment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from prefect_ray import RayTaskRunner

from core.config import RuntimeSettings, load_config
from core.runtime import ensure_ray, is_transient, worker_env


def prefect_api_url() -> str:
    """The configured Prefect API, or a local server started for this process."""
    from prefect.settings import get_current_settings

    url = os.environ.get("PREFECT_API_URL") or get_current_settings().api.url
    if url:
        return str(url)
    from prefect.server.api.server import SubprocessASGIServer

    from core.lifetime import watch_descendants

    watch_descendants()  # the temporary server ends with this process, even a SIGKILLed one
    server = SubprocessASGIServer()
    server.start()
    return server.api_url


@contextlib.contextmanager
def orchestration(runtime: RuntimeSettings) -> Iterator[str]:
    """Prefect API + Ray (sized by the config) ready for a flow run; yields the API URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = prefect_api_url()
    ensure_ray(runtime, worker_env(url))
    with temporary_settings({PREFECT_API_URL: url}):
        yield url


class ProjectRayTaskRunner(RayTaskRunner):
    """``RayTaskRunner`` whose workers report to the flow's Prefect API.

    When a flow starts without a Ray (a deployment run by a worker), this joins
    ``RAY_ADDRESS`` or starts a local Ray sized by the run's own profile (its
    ``config`` and ``overrides`` parameters), with the API URL in the workers'
    environment; otherwise it uses the Ray the caller started (``orchestration``).
    """

    def __enter__(self):
        import ray

        if not ray.is_initialized():
            ensure_ray(run_runtime_settings(), worker_env(prefect_api_url()))
        return super().__enter__()


def run_runtime_settings() -> RuntimeSettings:
    """The ``runtime`` settings of the profile this flow run was started with (a deployment run's parameters).

    The task runner starts Ray before the flow's body loads its config, so it reads the run's
    parameters from Prefect (``PREFECT__FLOW_RUN_ID``); outside a run, the defaults.
    """
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    if not params.get("config"):
        return RuntimeSettings()
    return load_config(params["config"], params.get("overrides")).runtime


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect's retry condition: retry a task only for a transient error (network, object store), not a bad input."""
    try:
        state.result()
    except Exception as err:  # noqa: BLE001 - the failed state's own exception
        return is_transient(err)
    return False


# Every task of the flows: up to 3 more tries for a transient error, after 2, 4 and 8 s (+-50%). A worker that dies
# is Ray's to retry (runtime.max_retries): the task's process is gone, so Prefect inside it cannot.
TASK_RETRIES = dict(retries=3, retry_delay_seconds=[2, 4, 8], retry_jitter_factor=0.5, retry_condition_fn=retry_if_transient)


def run_flow(flow, config: str = "tiny", overrides: list[str] | None = None, **params):
    """Validate the config, then run ``flow`` with a Prefect API and Ray ready (what the CLI calls).

    ``params`` are the flow's own parameters; ``config`` and ``overrides`` are passed on too.
    """
    cfg = load_config(config, overrides)
    with orchestration(cfg.runtime):
        return flow(config=config, overrides=overrides, **params)


def use_reserved_cpus(cpus: float) -> None:
    """Set this process's torch threads to the CPUs its Ray task reserved.

    Ray reuses worker processes and a worker keeps the torch threads of the first task it ran:
    a 1-CPU generation task on the worker that trained with 2 ran 2 threads beside another
    task's, and on 2 cores the oversubscribed OpenMP threads made the generation stage 3.3x slower.
    """
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def chunks(xs: list, size: int) -> list[list]:
    """``xs`` in consecutive chunks of ``size`` (one Ray task each)."""
    return [xs[i : i + size] for i in range(0, len(xs), size)]


class StageFailed(RuntimeError):
    """Some of a stage's tasks failed (after their retries): the stage publishes nothing from the others."""


def collect(futures, desc: str, unit: str = "task", total: int | None = None, progress: bool = False, advance=lambda out: 1) -> list:
    """Every task future's result, in completion order; ``StageFailed`` (after all have finished) when any failed.

    Waiting for all before raising lets the tasks that did succeed finish their writes (each write
    is atomic and idempotent, so the next run skips them). Every failure, and every Ray node lost
    while the tasks ran, is logged through the flow's run logger (the run's logs on the server).
    """
    from prefect.futures import as_completed
    from tqdm import tqdm

    before = _live_nodes()
    results, failures = [], []
    with tqdm(total=len(futures) if total is None else total, unit=unit, desc=desc, disable=not progress) as bar:
        for fut in as_completed(futures):
            try:
                out = fut.result()
            except Exception as err:  # noqa: BLE001 - every failure is reported below, then raised as one
                failures.append(err)
                _run_logger().warning(f"{desc}: task run {fut.task_run_id} failed: {type(err).__name__}: {_first_line(err)}")
                continue
            results.append(out)
            bar.update(advance(out))
    lost = before - _live_nodes()
    if lost:  # Ray retried their tasks elsewhere (runtime.max_retries); without this line the loss leaves no trace
        _run_logger().warning(f"{desc}: lost Ray node(s) {', '.join(sorted(lost))} while its tasks ran; "
                              f"their tasks were retried on the other nodes (runtime.max_retries)")
    if failures:
        err = failures[0]
        raise StageFailed(f"{desc}: {len(failures)} of {len(futures)} tasks failed, so nothing was published from the other "
                          f"{len(futures) - len(failures)}; first error: {type(err).__name__}: {_first_line(err)}") from err
    return results


def _live_nodes() -> set[str]:
    import ray

    from core.runtime import node_resources

    return set(node_resources()) if ray.is_initialized() else set()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else repr(err)


def _run_logger():
    """The flow's Prefect run logger (its lines are in the run's logs on the server); a plain logger outside a run."""
    import logging

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("draganything")


def gather(futures, summary: dict, add: tuple[str, ...], count: str, total: int, desc: str, unit: str, progress: bool) -> dict:
    """Wait for task ``futures`` (each returns a dict of counts), adding their ``add`` counts into ``summary``;
    ``StageFailed`` when any failed (see :func:`collect`). The progress bar advances by each result's ``count``."""
    outs = collect(futures, desc, unit, total, progress, advance=lambda out: out[count])
    for out in outs:
        for k in add:
            summary[k] += out[k]
    nodes = {out.get("node") for out in outs} - {None}
    if nodes:
        summary["nodes"] = sorted(nodes)  # the Ray nodes the tasks ran on (results that name one)
    return summary
