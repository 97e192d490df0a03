"""Prefect as a team runs it: the server on PostgreSQL (a cluster this test starts), `nightly-eval` twice through a process worker."""

import asyncio

import pytest

from flows.labels import labels_flow
from flows.runtime import run_flow

pytestmark = pytest.mark.integration


async def _count_flow_runs(postgres) -> int:
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
