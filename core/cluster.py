"""Resource requests checked against the Ray cluster's nodes at start-up: one sentence, not a task that waits forever.

A Ray task (or a Ray Train worker) runs on one node, so a request is compared with the largest
node, not with the cluster's total: two 1-CPU nodes have 2 CPUs in all but can never run a
2-CPU task, and Ray would only print "No available node types can fulfill resource request"
every half minute. ``nodes`` maps a node's name to its resources (``core.runtime.node_resources``).
"""

from __future__ import annotations

from core.config import ConfigError, RuntimeSettings

Nodes = dict[str, dict[str, float]]


def check_cluster(runtime: RuntimeSettings, nodes: Nodes) -> None:
    """Refuse (ConfigError) a task request of ``runtime`` that no node of the cluster can ever meet."""
    if not runtime.check_resources:
        return
    wanted = [("CPU", runtime.task_num_cpus, "runtime.task_num_cpus"),
              ("GPU", runtime.task_num_gpus, "runtime.task_num_gpus"),
              ("memory", (runtime.task_memory_mb or 0) * 2**20, "runtime.task_memory_mb")]
    for name, need, key in wanted:
        check_request(nodes, {name: need}, key, hint="runtime.check_resources=false skips this check")


def check_request(nodes: Nodes, need: dict[str, float], key: str, hint: str | None = None) -> None:
    """Refuse one task's request (e.g. {"CPU": 4, "GPU": 1}) that no single node can meet, naming the largest node."""
    need = {k: float(v) for k, v in need.items() if v}
    if not need or any(all(res.get(k, 0.0) >= v for k, v in need.items()) for res in nodes.values()):
        return
    short = [k for k in need if max((res.get(k, 0.0) for res in nodes.values()), default=0.0) < need[k]]
    name = (short or list(need))[0]
    largest = max(nodes, key=lambda n: nodes[n].get(name, 0.0)) if nodes else None
    total = sum(res.get(name, 0.0) for res in nodes.values())
    if largest is None:
        where = "the Ray cluster has no live node"
    elif short:
        where = f"the largest Ray node ({largest}) has {_amount(name, nodes[largest].get(name, 0.0))}"
    else:  # each resource is on some node, never all of them on one
        where = f"no Ray node has them together (the largest by {name} is {largest})"
    raise ConfigError(
        f"config key '{key}' asks {_amounts(need)} for one task but {where}, and a task runs on one node "
        f"({len(nodes)} node(s), {_amount(name, total)} in all), so it could never start; lower {key} or add a bigger node"
        + (f" ({hint})" if hint else "")
    )


def _amount(name: str, value: float) -> str:
    return f"{value / 2**20:.0f} MB of memory" if name == "memory" else f"{value:g} {name}"


def _amounts(need: dict[str, float]) -> str:
    return " + ".join(_amount(k, v) for k, v in need.items())
