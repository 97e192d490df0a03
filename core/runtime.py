"""Ray start-up and task options, for flows and for long-lived processes (the dashboard).

``ensure_ray`` joins the configured cluster (``runtime.ray_address`` or
``RAY_ADDRESS``) or starts a local Ray sized by the config; ``ray_task_options`` are
the resource requests of the heavy tasks. What is Prefect-specific (one Prefect API
for the flow and its workers, the task runner) lives in ``flows/runtime.py``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from core.config import RuntimeSettings

# A run prints progress, results and real warnings. Set before Prefect is first imported (it reads
# its settings then), so they reach a temporary server too; a user's own environment wins. No
# telemetry: there is no network to send it to, and its heartbeat fails with a traceback. No INFO
# lines from Prefect (a temporary server's run links die with it; PREFECT_LOGGING_LEVEL=INFO brings
# them back). A temporary server gets 2 minutes to start: Prefect's 20 s run out on a slow or busy
# machine while it creates its database. No "Loading weights" bars from transformers/diffusers (every
# load is from a local folder and takes milliseconds; the bars only bury the run's progress).
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"),
    "RAY_DEDUP_LOGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
}


def quiet_defaults() -> None:
    """Put :data:`QUIET_ENV` into this process's environment where the user set nothing."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)


def ray_address(runtime: RuntimeSettings) -> str | None:
    return runtime.ray_address or os.environ.get("RAY_ADDRESS") or None


def ensure_ray(runtime: RuntimeSettings, env: dict[str, str]) -> None:
    """Join the configured cluster, or start a local Ray sized by the config (``env``: the workers' environment);
    then check that the task requests fit the cluster (one sentence, not a task that waits forever)."""
    import ray

    from core.cluster import check_cluster

    if ray.is_initialized():
        check_cluster(runtime, node_resources())
        return
    # A local Ray turns token authentication on by default and warns that it did on every
    # start; the default is the safe one, so the notice is only noise (the choice stays Ray's).
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
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
    check_cluster(runtime, node_resources())


def worker_env(prefect_api_url: str) -> dict[str, str]:
    """The Ray workers' environment: the flow's Prefect API and quiet logging (also set here, as defaults)."""
    quiet_defaults()
    return {"PREFECT_API_URL": prefect_api_url, **QUIET_ENV}


_RAY_HOLDER: threading.Thread | None = None
_RAY_LOCK = threading.Lock()


def ensure_ray_held(runtime: RuntimeSettings, env: dict[str, str]) -> None:
    """:func:`ensure_ray` from any thread, for a long-lived process.

    A local Ray's processes die with the *thread* that started them (parent-death
    signal), and each Streamlit rerun is a short-lived thread; so Ray is started from a
    thread that lives as long as the process.
    """
    import ray

    global _RAY_HOLDER
    with _RAY_LOCK:
        if ray.is_initialized():
            return
        started = threading.Event()
        errors: list[BaseException] = []

        def hold() -> None:
            try:
                ensure_ray(runtime, env)
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                errors.append(err)
            finally:
                started.set()
            if not errors:
                threading.Event().wait()  # keep the thread (and so the local Ray) alive

        _RAY_HOLDER = threading.Thread(target=hold, name="draganything-ray-holder", daemon=True)
        _RAY_HOLDER.start()
        started.wait()
        if errors:
            raise errors[0]


def node_resources() -> dict[str, dict[str, float]]:
    """Each live Ray node's resources, by a name with its address and id (what a request is checked against)."""
    import ray

    return {f"{n['NodeManagerAddress']} {n['NodeID'][:8]}": dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")}


def listeners_off_loopback(pids: list[int]) -> list[str]:
    """The listening TCP sockets of processes ``pids`` that other machines could reach, as "name pid address:port".

    A wildcard (0.0.0.0, ::) counts as reachable unless every interface address of this network
    namespace is a loopback one (a namespace with only ``lo``). Ray binds its gRPC servers and agents
    to every interface whatever ``--node-ip-address`` says, so this is how a test shows where it listens.
    """
    import ipaddress

    import psutil

    only_loopback = all(ipaddress.ip_address(a.address.split("%")[0]).is_loopback
                        for addrs in psutil.net_if_addrs().values() for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))
    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            conns = [c for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue  # ended meanwhile
        for c in conns:
            ip = ipaddress.ip_address(c.laddr.ip.split("%")[0])
            ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 is loopback too
            if not (ip.is_loopback or (ip.is_unspecified and only_loopback)):
                found.append(f"{proc.name()} {pid} {c.laddr.ip}:{c.laddr.port}")
    return found


def node_id() -> str | None:
    """The Ray node this code runs on (None outside Ray): task results carry it, so a run shows where its work ran."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth another try after a pause: the network or the object store's connection, never a bad input."""
    errs: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from botocore import exceptions as boto

        errs += [boto.EndpointConnectionError, boto.ConnectionClosedError, boto.ReadTimeoutError, boto.ConnectTimeoutError]
    except ImportError:  # no S3 support installed
        pass
    try:
        import aiohttp

        errs += [aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError]
    except ImportError:
        pass
    return tuple(errs)


def is_transient(err: BaseException | None) -> bool:
    """Whether ``err``, or an error it was raised from, is one of :func:`transient_errors`."""
    kinds, seen = transient_errors(), set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kinds):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def ray_task_options(runtime: RuntimeSettings) -> dict:
    """Resource requests for the heavy tasks, from the config."""
    opts: dict = {"num_cpus": runtime.task_num_cpus, "max_retries": runtime.max_retries}
    if runtime.task_num_gpus:
        opts["num_gpus"] = runtime.task_num_gpus
    if runtime.task_memory_mb:
        opts["memory"] = runtime.task_memory_mb * 1024 * 1024
    return opts
