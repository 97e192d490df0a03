"""`draganything pipeline` on a real two-node Ray cluster (two raylets on loopback) over an s3:// workdir.

The head and the second node are separate `ray start` processes with one CPU each and
their own download caches, so nothing is shared between them but the S3 API and the
Prefect API, as on a cluster of machines without a shared filesystem.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from core.tables import TABLES, Workdir

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoNodeCluster:
    """A head and a second node, each `ray start` with 1 CPU; stopped by the pids of its own processes."""

    def __init__(self, base_env: dict[str, str]):
        self.temp = tempfile.mkdtemp(prefix="r21-", dir="/tmp")  # Ray's socket paths must stay short
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Token authentication, the token given to every node and the driver (as a cluster's operator would).
        self.env = {**base_env, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env.pop("RAY_AUTH_TOKEN_PATH", None)

    def start(self) -> "TwoNodeCluster":
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", f"--temp-dir={self.temp}",
                  f"--dashboard-agent-listen-port={_free_port()}"]
        self._start("head", ["--head", f"--port={self.port}", f"--ray-client-server-port={_free_port()}", "--include-dashboard=false", *common])
        self._start("second", [f"--address={self.address}", *common[:-1], f"--dashboard-agent-listen-port={_free_port()}"])
        return self

    def _start(self, name: str, args: list[str]) -> None:
        cache = Path(self.temp) / f"cache-{name}"
        out = subprocess.run([RAY, "start", *args], env={**self.env, "DRAGANYTHING_CACHE": str(cache)}, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, f"ray start ({name}) failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"

    def raylets(self) -> list[psutil.Process]:
        """Our raylets, the head's first (it started first)."""
        found = [p for p in psutil.process_iter(["name", "cmdline", "create_time"])
                 if p.info["name"] == "raylet" and any(self.temp in a for a in p.info["cmdline"] or [])]
        return sorted(found, key=lambda p: p.info["create_time"])

    def stop(self) -> None:
        ours = [p for p in psutil.process_iter(["cmdline"]) if any(self.temp in a for a in p.info["cmdline"] or [])]
        procs = {p.pid: p for p in ours}
        for p in ours:
            try:
                procs.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        for p in procs.values():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(procs.values()), timeout=30)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def cluster(s3_endpoint, orchestration_ready):
    c = TwoNodeCluster(dict(os.environ))
    try:
        yield c.start()
    finally:
        c.stop()


def _pipeline(cluster: TwoNodeCluster, args: list[str], cache: Path) -> dict:
    env = {**cluster.env, "RAY_ADDRESS": cluster.address, "DRAGANYTHING_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-m", "flows.cli", "pipeline", *args, "--json"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=1800)
    assert out.returncode == 0, f"pipeline failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def _nodes(report: dict) -> set[str]:
    found = set()
    for stage in ("labels", "generate"):
        for summary in report.get(stage, {}).values():
            found |= set(summary.get("nodes", []))
    return found


def _kill_second_raylet_when_busy(cluster: TwoNodeCluster, title: str, stop: threading.Event, killed: list) -> None:
    """SIGKILL the second node's raylet (and so its workers) once one of its workers runs ``title``."""
    while not stop.is_set():
        raylets = cluster.raylets()
        if len(raylets) == 2:
            second = raylets[1]
            try:
                busy = [c for c in second.children(recursive=True) if " ".join(c.cmdline()).startswith(title)]
            except psutil.NoSuchProcess:
                busy = []
            if busy:
                workers = second.children(recursive=True)
                second.kill()  # a lost machine: no clean shutdown
                for w in workers:
                    try:
                        w.kill()
                    except psutil.NoSuchProcess:
                        pass
                killed.append(second.pid)
                return
        time.sleep(0.02)


def _assert_each_key_once(wd: Workdir) -> None:
    for table in TABLES:
        df = wd.read(table)
        assert not df.duplicated(list(TABLES[table].key)).any(), f"{table} repeats a key"


def test_labels_spread_over_both_nodes(cluster, sample_root, s3_url, tmp_path):
    report = _pipeline(cluster, ["-w", s3_url, "--data-root", str(sample_root), "--stages", "labels",
                                 "--set", "labels.chunk_size=1"], tmp_path / "cache-driver")
    assert len(_nodes(report)) == 2, f"labels ran on {_nodes(report)}: expected both nodes"
    wd = Workdir(s3_url)
    assert wd.read("labels")["video_id"].nunique() == 8
    _assert_each_key_once(wd)


@pytest.mark.slow
def test_pipeline_survives_losing_a_node_mid_generate(cluster, s3_url, tmp_path):
    from core.sample_data import write_sample_dataset

    data = tmp_path / "data"
    write_sample_dataset(data, n_videos=16, n_frames=16, seed=3)  # 4 val videos
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_second_raylet_when_busy, args=(cluster, "ray::generate-items", stop, killed))
    killer.start()
    try:
        report = _pipeline(cluster, ["-w", s3_url, "--data-root", str(data), "--stages", "labels,generate,evaluate",
                                     "--checkpoint", "static", "--checkpoint", "warp", "--set", "labels.chunk_size=1",
                                     "--set", "generate.items_per_task=1", "--set", "generate.seeds=[0,1,2,3]",
                                     "--set", "evaluate.bootstrap=100", "--set", "evaluate.jackknife_groups=4",
                                     "--set", "runtime.max_retries=3"], tmp_path / "cache-driver")
    finally:
        stop.set()
        killer.join()
    assert killed, "no generate task was caught running on the second node"
    assert len(_nodes(report)) == 2, f"work ran on {_nodes(report)}: expected both nodes"
    wd = Workdir(s3_url)
    _assert_each_key_once(wd)
    assert wd.read("labels")["video_id"].nunique() == 16
    samples = wd.read("samples")
    assert len(samples) == 2 * 4 * 4  # every (checkpoint, item, seed) once
    assert all(wd.exists(p) for p in samples["video_path"])
    objmc = wd.read("objmc")
    assert set(objmc["checkpoint_id"]) == {"static", "warp"} and objmc.groupby("checkpoint_id")["item_id"].nunique().eq(4).all()
    metrics = wd.read("metrics")
    assert set(zip(metrics["checkpoint_id"], metrics["metric"])) >= {("static", "objmc"), ("warp", "objmc")}


def test_training_that_no_node_can_hold_fails_at_once_naming_the_largest_node(cluster, sample_root, tmp_path):
    """Two 1-CPU nodes have 2 CPUs in all, but a 2-CPU training process fits on neither: refused before preprocessing."""
    env = {**cluster.env, "RAY_ADDRESS": cluster.address, "DRAGANYTHING_CACHE": str(tmp_path / "cache")}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "flows.cli", "train", "-w", str(tmp_path / "work"), "--set", "train.cpus_per_worker=2"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    assert out.returncode == 2, f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    message = out.stderr.strip().splitlines()[-1]  # the command's own line (Prefect logs the flow run's error above it)
    assert message.startswith("config key 'train.cpus_per_worker' asks 2 CPU for one task but the largest Ray node ("), out.stderr[-3000:]
    assert "has 1 CPU" in message and "2 node(s), 2 CPU in all" in message
    assert seconds < 120, f"took {seconds:.0f} s: it waited instead of refusing"  # a hang never returns; measured in the report
