"""Tables that gained columns still read from old workdirs; replace() keeps one row per key."""

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from core.tables import LEGACY_IDENTITY, TABLES, Workdir


def _old_metrics_part(wd: Workdir) -> None:
    # A metrics part as written before identity, protocol, ci_method, replicates existed.
    old = pa.table({
        "checkpoint_id": ["static"], "benchmark": ["sample"], "metric": ["objmc"], "backbone": ["tracker:lk"],
        "value": [9.7], "ci_low": [8.4], "ci_high": [11.0], "n": pa.array([12], pa.int64()),
        "created_at": pa.array([dt.datetime(2026, 11, 21, tzinfo=dt.UTC)], pa.timestamp("us", tz="UTC")),
    })
    d = wd.table_dir("metrics")
    wd.fs.makedirs(d, exist_ok=True)
    pq.write_table(old, f"{d}/part-old.parquet")


def test_an_old_metrics_part_reads_with_defaults_for_new_columns(tmp_path):
    wd = Workdir(tmp_path)
    _old_metrics_part(wd)
    m = wd.read("metrics")
    r = m.iloc[0]
    assert r["identity"] == LEGACY_IDENTITY and r["protocol"] == "legacy"
    assert r["ci_method"].startswith("percentile") and r["value"] == 9.7
    assert wd.keys("metrics") == {("static", "sample", "objmc", "tracker:lk", LEGACY_IDENTITY)}
    assert set(m.columns) == set(TABLES["metrics"].schema.names)


def test_replace_keeps_one_row_per_key_and_leaves_other_rows(tmp_path):
    wd = Workdir(tmp_path)
    _old_metrics_part(wd)
    now = dt.datetime.now(dt.UTC)
    row = dict(checkpoint_id="warp", suite="sample", metric="objmc", backbone="tracker:lk", identity="project | lk", value=1.3, n=4, created_at=now)
    assert wd.replace("metrics", [row]) == 1
    assert wd.replace("metrics", [{**row, "value": 4.2, "n": 27}]) == 1
    m = wd.read("metrics").set_index("checkpoint_id")
    assert len(m) == 2 and m.loc["warp", "value"] == 4.2 and m.loc["warp", "n"] == 27
    assert m.loc["static", "value"] == 9.7  # the old part's other row is kept
    # replacing the legacy row through its defaulted key works too
    wd.replace("metrics", [dict(checkpoint_id="static", suite="sample", metric="objmc", backbone="tracker:lk",
                                identity=LEGACY_IDENTITY, value=9.0, n=12, created_at=now)])
    m = wd.read("metrics")
    assert len(m) == 2 and m.set_index("checkpoint_id").loc["static", "value"] == 9.0
    assert not [p for p in wd.fs.ls(wd.table_dir("metrics")) if ".new-part-" in p]
