import multiprocessing as mp
import os

import pandas as pd
import pytest

from core.tables import SchemaError, Workdir, now_utc


def _reject(i: int) -> dict:
    return dict(stage="labels", item=f"ds/train/v{i}", reason="bad frame", at=now_utc())


def test_append_is_idempotent_on_the_key(tmp_path):
    wd = Workdir(tmp_path)
    assert wd.append("rejects", [_reject(i) for i in range(3)]) == 3
    assert wd.append("rejects", [_reject(i) for i in range(5)]) == 2  # only the new keys
    assert wd.append("rejects", [_reject(i) for i in range(5)]) == 0
    df = wd.read("rejects")
    assert len(df) == 5 and not df.duplicated(["stage", "item"]).any()


def test_schema_is_checked_on_write(tmp_path):
    wd = Workdir(tmp_path)
    with pytest.raises(SchemaError, match="unknown columns"):
        wd.append("rejects", [{**_reject(0), "colour": "red"}])
    with pytest.raises(SchemaError, match="key columns"):
        wd.append("rejects", [{**_reject(0), "item": None}])
    with pytest.raises(SchemaError, match="repeat a key"):
        wd.append("rejects", [_reject(0), _reject(0)])
    with pytest.raises(SchemaError, match="do not match"):
        wd.append("train_log", [dict(checkpoint_id="c", step="not-a-number")])
    assert wd.read("rejects").empty


def test_a_failed_write_leaves_nothing_visible(tmp_path):
    wd = Workdir(tmp_path)

    def boom(f):
        f.write(b"PAR1 half a file")
        raise OSError("disk full")

    with pytest.raises(OSError):
        wd.write_atomic(wd.path("tables", "rejects", "part-x.parquet"), boom)
    assert os.listdir(wd.table_dir("rejects")) == []
    assert wd.read("rejects").empty


def test_empty_table_reads_with_its_schema(tmp_path):
    df = Workdir(tmp_path).read("labels")
    assert df.empty and "centers" in df.columns


def test_delete_by_key(tmp_path):
    wd = Workdir(tmp_path)
    wd.append("rejects", [_reject(i) for i in range(4)])
    assert wd.delete("rejects", [("labels", "ds/train/v1"), ("labels", "ds/train/v9")]) == 1
    assert sorted(wd.read("rejects")["item"]) == ["ds/train/v0", "ds/train/v2", "ds/train/v3"]


def _writer(args):
    root, start = args
    wd = Workdir(root)
    # Overlapping key ranges from several processes at once.
    return sum(wd.append("rejects", [_reject(i)]) for i in range(start, start + 20))


def test_concurrent_writers_never_duplicate_a_key(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        written = pool.map(_writer, [(str(tmp_path), s) for s in (0, 10, 20, 5)])
    df = Workdir(tmp_path).read("rejects")
    assert sum(written) == len(df) == 40
    assert not df.duplicated(["stage", "item"]).any()


def test_fsspec_url_workdir(tmp_path):
    wd = Workdir(f"file://{tmp_path}/w")
    wd.append("rejects", [_reject(1)])
    assert isinstance(wd.read("rejects"), pd.DataFrame) and len(wd.read("rejects")) == 1


def _metric(cid: str, suite: str, value: float) -> dict:
    return dict(checkpoint_id=cid, suite=suite, metric="objmc", backbone="tracker:lk", value=value, ci_low=value - 1,
                ci_high=value + 1, n=12, created_at=now_utc())


def _old_part(wd: Workdir, table: str, rows: list[dict], name: str) -> None:
    """A part as workdirs wrote it before the suites were renamed: a ``benchmark`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.tables import TABLES

    present = set().union(*rows)  # only the columns old workdirs had (no identity, protocol, ...)
    schema = pa.schema([f.with_name("benchmark") if f.name == "suite" else f for f in TABLES[table].schema if f.name in present])
    old = [{("benchmark" if k == "suite" else k): v for k, v in r.items()} for r in rows]
    os.makedirs(wd.table_dir(table), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(old, schema=schema), os.path.join(wd.table_dir(table), name))


def test_old_workdirs_with_a_benchmark_column_read_as_suite(tmp_path):
    import pyarrow.compute as pc

    from tasks.verdicts import metrics_table

    wd = Workdir(tmp_path)
    _old_part(wd, "metrics", [_metric("static", "sample", 9.7), _metric("warp", "sample", 0.9)], "part-old.parquet")
    from core.tables import LEGACY_IDENTITY

    legacy = {"identity": LEGACY_IDENTITY}  # an old part's rows read with this identity
    wd.append("metrics", [_metric("run-s1000", "sample", 8.0) | legacy, _metric("warp", "sample", 0.5) | legacy])  # warp's key exists: dropped
    df = wd.read("metrics")
    assert "benchmark" not in df.columns
    assert sorted(zip(df["checkpoint_id"], df["suite"], df["value"])) == [("run-s1000", "sample", 8.0), ("static", "sample", 9.7), ("warp", "sample", 0.9)]
    assert ("static", "sample", "objmc", "tracker:lk", LEGACY_IDENTITY) in wd.keys("metrics")
    only = wd.read("metrics", columns=["checkpoint_id"], filter=pc.field("suite") == "sample")
    assert sorted(only["checkpoint_id"]) == ["run-s1000", "static", "warp"]
    assert "| warp |" in metrics_table(wd, "sample")  # `draganything report` on an old demo workdir
    assert wd.delete("metrics", [("static", "sample", "objmc", "tracker:lk", LEGACY_IDENTITY)]) == 1  # the old part is rewritten, renamed
    import pyarrow.parquet as pq

    assert "suite" in pq.read_schema(os.path.join(wd.table_dir("metrics"), "part-old.parquet")).names
    assert sorted(Workdir(tmp_path).read("metrics")["checkpoint_id"]) == ["run-s1000", "warp"]


def test_report_prints_why_a_metric_has_no_interval(tmp_path):
    from eval.bootstrap import JACKKNIFE, NO_INTERVAL
    from tasks.verdicts import metrics_table

    wd = Workdir(tmp_path)
    nan = float("nan")
    rows = [_metric("warp", "sample", 0.9) | dict(metric="fvd", backbone="fallback-clip-v1", identity="project | fallback-clip-v1 | x",
                                                 ci_low=nan, ci_high=nan, ci_method=f"{JACKKNIFE}: no interval, {NO_INTERVAL}"),
            _metric("static", "sample", 2.0) | dict(metric="fvd", backbone="fallback-clip-v1", identity="project | fallback-clip-v1 | x")]
    wd.append("metrics", rows)
    table = metrics_table(wd, "sample")
    assert "| warp |  | 0.9 (n too small for an interval (n < d)) |" in table and "nan" not in table
    assert "2 [1, 3]" in table
