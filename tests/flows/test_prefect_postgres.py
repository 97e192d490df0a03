"""Prefect as a team runs it: the server on PostgreSQL (a cluster this test starts), `nightly-eval` twice through a process worker."""

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from flows.labels import labels_flow
from flows.runtime import run_flow

pytestmark = pytest.mark.integration
PREFECT = str(Path(sys.executable).parent / "prefect")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path | None:
    """Debian's PostgreSQL server binaries (`apt-get install postgresql`), newest version first."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]), reverse=True)
    dirs = [Path(d) for d in dirs if (Path(d) / "pg_ctl").exists()]
    if dirs:
        return dirs[0]
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


class PostgresCluster:
    """A throwaway cluster on a loopback port, run as `nobody` when we are root (postgres refuses root)."""

    def __init__(self, bindir: Path):
        self.bin = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="pg21-", dir="/tmp"))
        self.port = _free_port()
        self.as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "nobody")

    def _run(self, *args: str, timeout: int = 180) -> None:
        out = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        assert out.returncode == 0, f"{Path(args[0]).name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"

    def start(self) -> "PostgresCluster":
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-o", opts, "-w", "-t", "120", "start")
        return self

    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
                           capture_output=True, timeout=120, cwd=self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres():
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql; .ci/run installs them)")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: PostgreSQL refuses to run as root")
    cluster = PostgresCluster(bindir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def prefect_on_postgres(postgres, tmp_path):
    """`prefect server start` with its database on PostgreSQL; yields (api_url, postgres)."""
    port = _free_port()
    env = {**os.environ, "PREFECT_API_DATABASE_CONNECTION_URL": postgres.url(), "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(tmp_path / "prefect-server.log", "wb")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(1800):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "prefect-server.log").read_text()[-3000:]
                time.sleep(0.2)
        else:
            raise AssertionError("the Prefect server on PostgreSQL did not answer within 6 minutes")
        yield url, postgres
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


async def _count_flow_runs(postgres: PostgresCluster) -> int:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=postgres.port, user="postgres", database="postgres")
    try:
        return await conn.fetchval("SELECT count(*) FROM flow_run WHERE name IS NOT NULL")
    finally:
        await conn.close()


def test_nightly_eval_on_a_postgres_backed_server_runs_then_skips(sample_root, tmp_path, orchestration_ready, prefect_on_postgres, nightly):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, postgres = prefect_on_postgres
    deploy_env, nightly_twice = nightly
    workdir = tmp_path / "work"
    run_flow(labels_flow, data_root=str(sample_root), split="val", workdir_url=str(workdir), dataset="sample", progress=False)
    with temporary_settings({PREFECT_API_URL: url}):
        nightly_twice(workdir, sample_root, deploy_env(workdir, sample_root, PREFECT_API_URL=url))
    assert asyncio.run(_count_flow_runs(postgres)) >= 2  # the runs are in PostgreSQL, not a SQLite file
