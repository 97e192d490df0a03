"""Loopback is loopback: where a local Ray listens, checked on the sockets themselves.

Ray binds its gRPC servers and agents to every interface whatever `--node-ip-address` says
(seen: gcs_server and raylet on `::`, the runtime-env agent on the machine's address). In a
network namespace whose only interface is `lo` nothing it opens can be reached from another
machine; that is how docs/operations.md says to keep a single-machine Ray private.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

# A local Ray as the flows start it (core.runtime.ensure_ray), one task run, then every listener of the Ray processes.
PROBE = """
import json, psutil
from core.config import RuntimeSettings
from core.runtime import ensure_ray, listeners_off_loopback
ensure_ray(RuntimeSettings(num_cpus=1), {})
import ray
ray.get(ray.remote(lambda: 1).remote())
pids = [p.pid for p in psutil.Process().children(recursive=True)] + [psutil.Process().pid]
listening = sum(1 for p in pids for c in psutil.Process(p).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN)
print(json.dumps({"listening": listening, "off_loopback": listeners_off_loopback(pids)}))
"""


def _probe(prefix: list[str]) -> dict:
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(Path.home()), "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run([*prefix, sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def _can_unshare() -> bool:
    return bool(shutil.which("unshare")) and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def _has_a_network() -> bool:
    return any(not a.address.startswith(("127.", "::1")) for addrs in psutil.net_if_addrs().values() for a in addrs
               if a.family.name in ("AF_INET", "AF_INET6"))


@pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -n` (root or user namespaces) to make a network namespace")
def test_a_local_ray_in_a_loopback_only_network_namespace_has_no_listener_beyond_loopback():
    found = _probe(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"'])
    assert found["listening"] >= 3  # gcs_server, raylet, workers: there were sockets to check
    assert found["off_loopback"] == []


@pytest.mark.skipif(not _has_a_network(), reason="this machine has no interface but loopback")
def test_a_local_ray_outside_a_namespace_is_reported_listening_beyond_loopback():
    """Ray's own behaviour, so that the check above can fail: on a machine with a network it listens on it."""
    found = _probe([])
    assert any(line.startswith(("gcs_server", "raylet")) for line in found["off_loopback"]), found
