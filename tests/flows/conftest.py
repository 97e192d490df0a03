"""Shared by the deployment tests: the prefect CLI from this venv, a `prefect server start` on SQLite or on a
throwaway PostgreSQL cluster, and one run of `nightly-eval` through a process worker."""

import contextlib
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

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


def prefect_cli(args: list[str], env: dict[str, str], timeout: int = 180) -> str:
    out = subprocess.run([PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout


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


@contextlib.contextmanager
def start_prefect_server(database_url: str, home: Path, extra_env: dict[str, str] | None = None):
    """`prefect server start` on a loopback port with its database at ``database_url``; a context yielding the API URL."""
    port = _free_port()
    env = {**os.environ, "PREFECT_API_DATABASE_CONNECTION_URL": database_url, "PREFECT_HOME": str(home / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false", **(extra_env or {})}
    env.pop("PREFECT_API_URL", None)
    log_path = home / "prefect-server.log"
    log = open(log_path, "wb")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(1800):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                assert server.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.2)
        else:
            raise AssertionError(f"the Prefect server on {env['PREFECT_API_DATABASE_CONNECTION_URL']} did not answer within 6 minutes")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def prefect_on_postgres(postgres, tmp_path):
    """`prefect server start` with its database on PostgreSQL; yields (api_url, postgres)."""
    with start_prefect_server(postgres.url(), tmp_path) as url:
        yield url, postgres


def run_nightly_once(env: dict[str, str]) -> str:
    """Start a `pipeline/nightly-eval` run, serve it with a `--run-once` process worker, wait for it to complete."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    run = run_deployment("pipeline/nightly-eval", timeout=0)
    prefect_cli(["worker", "start", "--pool", "draganything", "--type", "process", "--run-once"], env, timeout=600)
    with get_client(sync_client=True) as client:
        for _ in range(600):
            state = client.read_flow_run(run.id).state
            if state and state.is_final():
                break
            time.sleep(1)
    assert state.is_completed(), f"nightly-eval ended {state.type}: {state.message}"
    return str(run.id)


def deploy_env(workdir: Path, data: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DRAGANYTHING_REPO": str(REPO), "DRAGANYTHING_WORKDIR": str(workdir), "DRAGANYTHING_DATA": str(data), **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def nightly_twice(workdir: Path, data: Path, env: dict[str, str]) -> None:
    """Deploy prefect.yaml, run `nightly-eval` twice: the first scores the references, the second does nothing."""
    from core.tables import TABLES, Workdir

    prefect_cli(["work-pool", "create", "draganything", "--type", "process", "--overwrite"], env)
    out = prefect_cli(["--no-prompt", "deploy", "--all"], env)
    assert "nightly-eval" in out and "weekly-retrain" in out

    run_nightly_once(env)
    wd = Workdir(workdir)
    metrics = wd.read("metrics")
    assert {("static", "objmc"), ("warp", "objmc"), ("warp", "fid"), ("warp", "fvd")} <= set(zip(metrics["checkpoint_id"], metrics["metric"]))
    before = {t: len(wd.read(t)) for t in TABLES}

    run_nightly_once(env)  # nothing is missing metrics now: no work, no duplicate
    assert {t: len(wd.read(t)) for t in TABLES} == before
    for table in TABLES:
        assert not wd.read(table).duplicated(list(TABLES[table].key)).any(), table


@pytest.fixture
def nightly():
    """(deploy_env, nightly_twice): see those functions."""
    return deploy_env, nightly_twice


@pytest.fixture
def deploy_tools():
    """(start_prefect_server, deploy_env, prefect_cli): see those functions."""
    return start_prefect_server, deploy_env, prefect_cli


def run_reports(workdir: str) -> list:
    """The run-report artifacts of pipeline runs on ``workdir``, newest first, each with its flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from flows.pipeline import REPORT_KEY

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[REPORT_KEY])),
                                      sort=ArtifactSort.CREATED_DESC)
        runs = {a.flow_run_id: client.read_flow_run(a.flow_run_id) for a in found if a.flow_run_id}
    return [(a, runs.get(a.flow_run_id)) for a in found if a.description.startswith(f"{workdir}:")]


@pytest.fixture(name="run_reports")
def run_reports_fixture():
    """run_reports: see that function."""
    return run_reports
