"""The schedules in prefect.yaml fire: the real server's scheduler service creates runs for both deployments.

The other deployment tests start runs by hand, so a scheduler that fails every loop (as it did with
SQLAlchemy 2.1: "Can't evaluate bulk DML statement", 0 scheduled runs) passes them. This one deploys
`prefect.yaml` to a work pool and waits until the scheduler, not the test, has created runs; on SQLite
and on PostgreSQL. The scheduler loops every second here instead of every 60 s. Each deployment runs
one flow run at a time (concurrency limit 1, later runs enqueued).
"""

import json
import time
import urllib.request

import pytest

pytestmark = pytest.mark.integration
DEPLOYMENTS = {"nightly-eval", "weekly-retrain"}


def _post(api: str, path: str, body: dict) -> list[dict]:
    req = urllib.request.Request(f"{api}/{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def _scheduled_runs(api: str) -> dict[str, int]:
    """Scheduled flow runs per deployment name."""
    names = {d["id"]: d["name"] for d in _post(api, "deployments/filter", {})}
    runs = _post(api, "flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
    counts = dict.fromkeys(names.values(), 0)
    for run in runs:
        if run["deployment_id"] in names and run.get("auto_scheduled"):
            counts[names[run["deployment_id"]]] += 1
    return counts


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_scheduler_creates_runs_for_both_deployments(database, tmp_path, request, deploy_tools):
    start_prefect_server, deploy_env, prefect_cli = deploy_tools
    url = (request.getfixturevalue("postgres").url() if database == "postgresql"
           else f"sqlite+aiosqlite:///{tmp_path}/prefect.db")
    with start_prefect_server(url, tmp_path, {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1"}) as api:
        env = deploy_env(tmp_path / "work", tmp_path / "data", PREFECT_API_URL=api)
        prefect_cli(["work-pool", "create", "draganything", "--type", "process", "--overwrite"], env)
        prefect_cli(["--no-prompt", "deploy", "--all"], env)
        deadline = time.monotonic() + 90
        while (counts := _scheduled_runs(api)) and min(counts.values(), default=0) == 0 and time.monotonic() < deadline:
            time.sleep(1)
        log = (tmp_path / "prefect-server.log").read_text()
        assert set(counts) == DEPLOYMENTS and min(counts.values()) > 0, (
            f"the scheduler created {counts} scheduled runs in 90 s; server log:\n{log[-3000:]}")
        assert "InvalidRequestError" not in log, log[-3000:]
        for d in _post(api, "deployments/filter", {}):  # one run at a time; a run that comes due meanwhile waits
            assert d["global_concurrency_limit"]["limit"] == 1 and d["concurrency_options"]["collision_strategy"] == "ENQUEUE", d["name"]
            if d["name"] == "weekly-retrain":
                assert d["parameters"]["resume"] == "auto"  # bootstraps a fresh workdir
