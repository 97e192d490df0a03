"""Prefect retries a task that hit a transient error (network, object store) and fails a bad input at once."""

import pytest
from prefect import flow, task

from core.runtime import is_transient
from flows.runtime import TASK_RETRIES

pytestmark = pytest.mark.integration
CALLS: list[str] = []


@task(name="flaky", **{**TASK_RETRIES, "retry_delay_seconds": 0, "retry_jitter_factor": None})
def flaky(kind: str) -> int:
    CALLS.append(kind)
    if kind == "transient" and CALLS.count(kind) < 3:
        try:
            raise ConnectionResetError("the object store closed the connection")
        except ConnectionResetError as err:
            raise OSError("s3 write failed") from err  # how a storage layer re-raises it
    if kind == "bad":
        raise ValueError("item 7 has no mask")
    return CALLS.count(kind)


@flow
def run_one(kind: str) -> int:
    return flaky(kind)


def test_a_transient_error_is_retried_and_a_bad_input_fails_at_once(orchestration_ready):
    assert run_one("transient") == 3  # two failures, then the third try succeeds
    with pytest.raises(ValueError, match="no mask"):
        run_one("bad")
    assert CALLS.count("bad") == 1  # not retried
    assert is_transient(TimeoutError()) and not is_transient(FileNotFoundError("x"))
