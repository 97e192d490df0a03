"""Resource requests checked against the Ray cluster at start-up: one sentence, not a task that waits forever."""

from __future__ import annotations

from core.config import ConfigError, RuntimeSettings


def check_cluster(runtime: RuntimeSettings, resources: dict[str, float]) -> None:
    """Refuse (ConfigError) a task request that the cluster's ``resources`` (``ray.cluster_resources()``) can never meet."""
    if not runtime.check_resources:
        return
    wanted = [("CPU", runtime.task_num_cpus, "runtime.task_num_cpus"),
              ("GPU", runtime.task_num_gpus, "runtime.task_num_gpus"),
              ("memory", (runtime.task_memory_mb or 0) * 2**20, "runtime.task_memory_mb")]
    for name, need, key in wanted:
        have = float(resources.get(name, 0.0))
        if need and need > have:
            if name == "memory":
                need_text, have_text = f"{need / 2**20:.0f} MB", f"{have / 2**20:.0f} MB of memory"
            else:
                need_text, have_text = f"{need:g} {name}", f"{have:g} {name}"
            raise ConfigError(
                f"config key '{key}' asks {need_text} per task but the Ray cluster has {have_text} in all, so no task "
                f"could ever start; lower {key} or join a bigger cluster (runtime.check_resources=false skips this check)"
            )


def check_request(resources: dict[str, float], need: dict[str, float], key: str) -> None:
    """Refuse one task's request (e.g. {"CPU": 4, "GPU": 1}) that the cluster's ``resources`` can never meet."""
    for name, amount in need.items():
        have = float(resources.get(name, 0.0))
        if amount and amount > have:
            raise ConfigError(
                f"config key '{key}' asks {amount:g} {name} for one task but the Ray cluster has {have:g} {name} in all, "
                f"so it could never start; lower {key} or join a bigger cluster"
            )
