"""The table store under bad parts, killed writers, concurrent replaces and many appends: locally and on S3 (moto)."""

import multiprocessing as mp
import os
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.parts import COMPACT_AT
from core.tables import TABLES, Workdir, now_utc
from tasks.status import format_status, workdir_status


@pytest.fixture(params=["local", "s3"])
def url(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "w")
    return request.getfixturevalue("s3_url")


def _reject(i: int, reason: str = "bad frame") -> dict:
    return dict(stage="labels", item=f"ds/train/v{i:03d}", reason=reason, at=now_utc())


def _metric(i: int, value: float) -> dict:
    return dict(checkpoint_id=f"run-s{i}", suite="sample", metric="objmc", backbone="tracker:lk", identity="id",
                value=value, ci_low=value - 1, ci_high=value + 1, n=12, created_at=now_utc())


def _raw(wd: Workdir, table: str) -> pd.DataFrame:
    """The table as `pd.read_parquet` shows it: every visible part, no rules applied."""
    parts = [p for p in wd.fs.ls(wd.table_dir(table), detail=False)
             if p.endswith(".parquet") and not os.path.basename(p).startswith((".", "_"))]
    return pa.concat_tables([pq.read_table(p, filesystem=wd.fs) for p in parts]).to_pandas() if parts else pd.DataFrame()


def test_a_part_with_other_column_types_is_quarantined_and_the_table_lives_on(url, caplog):
    wd = Workdir(url)
    wd.append("rejects", [_reject(i) for i in range(3)])
    bad = pa.table({"stage": ["labels"], "item": ["ds/train/x"], "reason": [7], "at": [1.5]})  # readable, wrong types
    buf = pa.BufferOutputStream()
    pq.write_table(bad, buf)
    wd.fs.pipe_file(wd.path("tables", "rejects", "part-bad.parquet"), buf.getvalue().to_pybytes())
    with caplog.at_level("WARNING"):
        assert len(wd.read("rejects")) == 3
    assert "part-bad.parquet is skipped" in caplog.text
    assert [os.path.basename(p) for p in wd.damaged_parts("rejects")] == ["part-bad.parquet"]
    assert "damaged parts of table rejects" in format_status(workdir_status(wd))
    assert wd.append("rejects", [_reject(9)]) == 1  # the writer moves it out first
    assert len(Workdir(url).read("rejects")) == 4 and wd.damaged_parts("rejects") == []
    (why,) = wd.quarantined_parts("rejects").values()
    assert why == "its column 'reason' is int64, the table declares string"
    assert "quarantined parts of table rejects" in format_status(workdir_status(wd))
    assert len(pd.read_parquet(wd.location("tables", "rejects"))) == 4  # the quick look skips `_quarantine/` too


def test_a_damaged_part_is_replaced_by_the_rerun_that_regenerates_its_rows(url):
    wd = Workdir(url)
    rows = [_reject(i) for i in range(34)]
    assert wd.append("rejects", rows) == 34
    (part,) = [p for p in wd.fs.ls(wd.table_dir("rejects"), detail=False) if p.endswith(".parquet")]
    wd.fs.pipe_file(part, b"PAR1" + b"\0" * 100)  # the same name, damaged contents
    assert wd.read("rejects").empty
    assert wd.append("rejects", rows) == 34  # on S3 the conditional create of that name used to refuse: 0 rows
    assert len(Workdir(url).read("rejects")) == 34
    assert len(wd.quarantined_parts("rejects")) == 1


def test_a_killed_replace_leaves_a_hidden_part_that_the_next_writer_sweeps(url):
    wd = Workdir(url)
    wd.append("metrics", [_metric(0, 1.0)])
    leftover = wd.path("tables", "metrics", ".new-part-0123456789abcdef0123.parquet")
    wd.fs.pipe_file(leftover, b"a killed replace's part")
    assert len(wd.read("metrics")) == 1  # never read
    wd.replace("metrics", [_metric(0, 2.0)])
    assert not wd.fs.exists(leftover)
    assert Workdir(url).read("metrics")["value"].tolist() == [2.0]


def test_appends_keep_the_parts_few_and_the_raw_parts_free_of_repeated_keys(url):
    wd = Workdir(url)
    for i in range(2 * COMPACT_AT + 3):
        assert wd.append("rejects", [_reject(i), _reject(i + 1)]) == (2 if i == 0 else 1)
    parts = [p for p in wd.fs.ls(wd.table_dir("rejects"), detail=False) if p.endswith(".parquet")]
    assert len(parts) < COMPACT_AT
    raw = _raw(wd, "rejects")
    assert len(raw) == 2 * COMPACT_AT + 4 and not raw.duplicated(["stage", "item"]).any()
    assert len(Workdir(url).read("rejects")) == 2 * COMPACT_AT + 4


def _replace_at(args) -> None:
    url, endpoint, start_at, keys, value = args
    if endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    wd = Workdir(url)
    rows = [_metric(i, value) for i in keys]
    time.sleep(max(0.0, start_at - time.time()))  # both writers start together
    wd.replace("metrics", rows)


def test_concurrent_replaces_of_keys_that_share_a_part_lose_nothing(url):
    # The case: two replaces of keys held by one part; without a lock on S3 a stale value or row survived.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3", "") if url.startswith("s3://") else ""
    wd = Workdir(url)
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_replace_at, [(url, endpoint, 0.0, [0], 0.0)] * 2)  # import in both workers before timing rounds
        rounds = 5
        for r in range(1, rounds + 1):
            wd.append("metrics", [_metric(i, -1.0) for i in range(100 * r, 100 * r + 10)])  # round r's keys: one part
            keys = range(100 * r, 100 * r + 10)
            start = time.time() + 0.5
            pool.map(_replace_at, [(url, endpoint, start, keys[:6], r + 0.1), (url, endpoint, start, keys[4:], r + 0.2)])
            got = Workdir(url).read("metrics").set_index("checkpoint_id")["value"]
            mine = got[[f"run-s{i}" for i in keys]]
            assert (mine.iloc[:4] == r + 0.1).all() and (mine.iloc[6:] == r + 0.2).all(), f"round {r}: {mine.tolist()}"
            assert mine.iloc[4:6].isin([r + 0.1, r + 0.2]).all()
            raw = _raw(wd, "metrics")
            assert not raw.duplicated(list(TABLES["metrics"].key)).any() and len(raw) == 1 + 10 * r
