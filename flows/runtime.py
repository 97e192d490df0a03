"""Where flows run: one Prefect API for the flow and every Ray worker, and one Ray.

Without ``PREFECT_API_URL`` a Ray worker that runs a Prefect task would start a
temporary Prefect server of its own (seconds per worker). So the driver makes sure
there is one API — the configured one, or a local SQLite-backed server it starts —
and hands its URL to the workers through Ray's runtime environment.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from prefect_ray import RayTaskRunner

from core.config import RuntimeSettings

_QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no network here
    "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
    "RAY_DEDUP_LOGS": "1",
}


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


def ray_address(runtime: RuntimeSettings) -> str | None:
    return runtime.ray_address or os.environ.get("RAY_ADDRESS") or None


def ensure_ray(runtime: RuntimeSettings, env: dict[str, str]) -> None:
    """Join the configured cluster, or start a local Ray sized by the config; then check the task requests fit it."""
    import ray

    from core.cluster import check_cluster

    if ray.is_initialized():
        check_cluster(runtime, ray.cluster_resources())
        return
    address = ray_address(runtime)
    kwargs: dict = dict(
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=True,
        logging_level="warning",
        runtime_env={"env_vars": env},
    )
    if address:
        ray.init(address=address, **kwargs)
    else:
        from core.lifetime import watch_descendants

        watch_descendants()  # the local Ray ends with this process, even a SIGKILLed one
        ray.init(num_cpus=runtime.num_cpus, **kwargs)
    check_cluster(runtime, ray.cluster_resources())


def worker_env(url: str) -> dict[str, str]:
    for k, v in _QUIET.items():
        os.environ.setdefault(k, v)
    return {"PREFECT_API_URL": url, **_QUIET}


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


def ray_task_options(runtime: RuntimeSettings) -> dict:
    """Resource requests for the heavy tasks, from the config."""
    opts: dict = {"num_cpus": runtime.task_num_cpus, "max_retries": runtime.max_retries}
    if runtime.task_num_gpus:
        opts["num_gpus"] = runtime.task_num_gpus
    if runtime.task_memory_mb:
        opts["memory"] = runtime.task_memory_mb * 1024 * 1024
    return opts
