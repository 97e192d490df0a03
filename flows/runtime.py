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
from core.runtime import ensure_ray, worker_env


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
    ``RAY_ADDRESS`` or starts a local Ray, with the API URL in the workers'
    environment; otherwise it uses the Ray the caller started (``orchestration``).
    """

    def __enter__(self):
        import ray

        if not ray.is_initialized():
            ensure_ray(RuntimeSettings(), worker_env(prefect_api_url()))
        return super().__enter__()


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


def gather(futures, summary: dict, add: tuple[str, ...], count: str, total: int, desc: str, unit: str, progress: bool) -> dict:
    """Wait for task ``futures`` (each returns a dict of counts) as they finish, adding their ``add``
    counts into ``summary``; the progress bar (of ``total``) advances by each result's ``count``."""
    from prefect.futures import as_completed
    from tqdm import tqdm

    nodes = set()
    with tqdm(total=total, unit=unit, desc=desc, disable=not progress) as bar:
        for fut in as_completed(futures):
            out = fut.result()
            for k in add:
                summary[k] += out[k]
            nodes.add(out.get("node"))
            bar.update(out[count])
    if nodes - {None}:
        summary["nodes"] = sorted(nodes - {None})  # the Ray nodes the tasks ran on (results that name one)
    return summary
