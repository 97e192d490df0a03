"""The table store (core/tables.py) against Delta Lake (deltalake, delta-rs) on the same work, locally and on S3 (moto).

    .venv/bin/python benchmarks/table_store.py [--parts 1,100,1000,10000] [--s3-parts 1,100,1000]
                                               [--rounds 20] [--where local,s3] [--stores ours,delta]

Needs the `bench` extra (`pip install -c constraints.txt -e .[bench,test]`) for deltalake and moto.
For each store and place it measures, printing one JSON line per result:

- **append**: a table grown by one-row appends; at each size in ``--parts`` (appends done so
  far), the median of 9 appends from a fresh handle (as a pipeline task does), each next to
  an append to a fresh table of 1 part (``one_part_ms``, and ``ratio``). Ours: an
  idempotent append (``Workdir.append``: rows whose key exists are dropped). Delta: the
  same, a merge that inserts the rows whose key is absent; and a plain append (no dedup).
  ``files`` is the number of data files the table is made of then.
- **read**: a cold whole-table read (``Workdir.read`` / ``DeltaTable.to_pandas``) at that size,
  what a dashboard page does on each load; ``raw_rows`` is what ``pd.read_parquet`` of the
  folder shows (rows of files a commit removed included).
  ``delta-opt`` is Delta with its own compaction (``optimize.compact()``) every 16 appends.
- **replace**: ``--rounds`` rounds of two processes replacing 6 of 10 keys each (2 shared) of
  one part at once; a round is right when every key holds the value of a writer of that
  round and no key is stored twice.
- **killed**: a writer killed (SIGKILL) at a random moment of a replace loop, 5 times; then
  whether the table reads, has one row per key, and how long the next write took.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
KEY = ["checkpoint_id", "suite", "metric", "backbone", "identity"]


def _metric(i: int, value: float) -> dict:
    from core.tables import now_utc

    return dict(checkpoint_id=f"run-s{i}", suite="sample", metric="objmc", backbone="tracker:lk", identity="id",
                value=value, ci_low=value - 1, ci_high=value + 1, n=12, created_at=now_utc())


def _arrow(rows: list[dict]) -> pa.Table:
    from core.tables import to_arrow

    return to_arrow("metrics", rows)


# --- the two stores behind one small interface -----------------------------------------


class Ours:
    name = "ours"

    def __init__(self, url: str):
        from core.tables import Workdir

        self.url, self.wd = url, Workdir(url)

    def fresh(self) -> Ours:
        return Ours(self.url)

    def append(self, rows: list[dict]) -> None:
        self.wd.append("metrics", rows)

    def replace(self, rows: list[dict]) -> None:
        self.wd.replace("metrics", rows)

    def read(self) -> pd.DataFrame:
        return self.wd.read("metrics")

    def files(self) -> list[str]:
        d = self.wd.table_dir("metrics")
        return [p for p in self.wd.fs.ls(d, detail=False) if p.endswith(".parquet") and not os.path.basename(p).startswith((".", "_"))]

    def raw_rows(self) -> int:
        return sum(pq.read_metadata(p, filesystem=self.wd.fs).num_rows for p in self.files())


class Delta:
    name = "delta"

    def __init__(self, url: str, options: dict | None = None):
        import fsspec

        self.url, self.options = url.rstrip("/") + "/tables/metrics", options or {}
        self.fs, self.root = fsspec.core.url_to_fs(self.url, use_listings_cache=False)

    def fresh(self) -> Delta:
        return Delta(self.url.removesuffix("/tables/metrics"), self.options)

    def _table(self):
        from deltalake import DeltaTable

        return DeltaTable(self.url, storage_options=self.options)

    def _merge(self, rows: list[dict], update: bool) -> None:
        from deltalake import write_deltalake
        from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

        source = _arrow(rows)
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in KEY)
        for attempt in range(10):  # a conflicting concurrent commit: delta-rs refuses it, the writer retries
            try:
                merger = self._table().merge(source, predicate=predicate, source_alias="s", target_alias="t")
                (merger.when_matched_update_all() if update else merger).when_not_matched_insert_all().execute()
                return
            except TableNotFoundError:
                try:
                    write_deltalake(self.url, source, storage_options=self.options)
                    return
                except DeltaError:  # another writer created it first
                    continue
            except CommitFailedError:
                time.sleep(random.random() * 0.05 * (attempt + 1))
        raise RuntimeError("delta merge: 10 conflicting commits in a row")

    def append(self, rows: list[dict]) -> None:
        self._merge(rows, update=False)  # idempotent like Workdir.append: only keys not there yet

    def plain_append(self, rows: list[dict]) -> None:
        from deltalake import write_deltalake

        write_deltalake(self.url, _arrow(rows), mode="append", storage_options=self.options)

    def replace(self, rows: list[dict]) -> None:
        self._merge(rows, update=True)

    def read(self) -> pd.DataFrame:
        return self._table().to_pandas()

    def files(self) -> list[str]:
        return self._table().file_uris()

    def raw_rows(self) -> int:
        paths = [p for p in self.fs.ls(self.root, detail=False) if p.endswith(".parquet")]
        return sum(pq.read_metadata(p, filesystem=self.fs).num_rows for p in paths)


def _store(kind: str, url: str, options: dict) -> Ours | Delta:
    return Ours(url) if kind == "ours" else Delta(url, options)  # "delta" and "delta-opt" (compacted while it grows)


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


# --- the measurements ----------------------------------------------------------------------


def bench_append(kind: str, url: str, options: dict, sizes: list[int], where: str, pairs: int = 9) -> None:
    """At each size: ``pairs`` appends to the grown table, each next to an append to a fresh 1-part table
    (the same moment, so a shared machine's changing load hits both alike); medians and their ratio."""
    store = _store(kind, url, options)
    done = 0
    grow = store.plain_append if kind.startswith("delta") else store.append  # plain appends grow a Delta table faster
    for size in sizes:
        while done < size:
            grow([_metric(done, 1.0)])
            done += 1
            if kind == "delta-opt" and done % 16 == 0:  # Delta's own compaction (OPTIMIZE), as often as ours compacts
                store._table().optimize.compact()
        big, base = [], []
        for j in range(pairs):
            small = _store(kind, f"{url}-base-{size}-{j}", options)
            small.append([_metric(0, 1.0)])
            base.append(_ms(lambda s=small: s.fresh().append([_metric(1, 1.0)])))
            big.append(_ms(lambda i=done: store.fresh().append([_metric(i, 1.0)])))
            done += 1
        out = dict(bench="append", store=kind, where=where, parts=size, append_ms=round(statistics.median(big), 1),
                   one_part_ms=round(statistics.median(base), 1), ratio=round(statistics.median(big) / statistics.median(base), 2),
                   files=len(store.fresh().files()))
        if kind.startswith("delta"):
            out["plain_append_ms"] = round(statistics.median(_ms(lambda i=done + j: store.fresh().plain_append([_metric(i, 1.0)]))
                                                             for j in range(5)), 1)
            done += 5
        reads = [_ms(lambda: store.fresh().read()) for _ in range(3)]
        out |= dict(read_ms=round(statistics.median(reads), 1), rows=len(store.fresh().read()), raw_rows=store.fresh().raw_rows())
        print(json.dumps(out), flush=True)


def _replace_at(args) -> None:
    kind, url, options, start_at, keys, value = args
    store = _store(kind, url, options)
    rows = [_metric(i, value) for i in keys]
    time.sleep(max(0.0, start_at - time.time()))
    store.replace(rows)


def bench_replace(kind: str, url: str, options: dict, rounds: int, where: str) -> None:
    store = _store(kind, url, options)
    store.append([_metric(0, 0.0)])
    right = 0
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_replace_at, [(kind, url, options, 0.0, [0], 0.0)] * 2)  # both workers imported before the rounds
        t0 = time.perf_counter()
        for r in range(1, rounds + 1):
            keys = list(range(100 * r, 100 * r + 10))
            store.append([_metric(i, -1.0) for i in keys])  # one part (one file) holds the round's keys
            start = time.time() + 0.3
            pool.map(_replace_at, [(kind, url, options, start, keys[:6], r + 0.1), (kind, url, options, start, keys[4:], r + 0.2)])
            df = store.fresh().read()
            got = df.set_index("checkpoint_id")["value"]
            mine = got.reindex([f"run-s{i}" for i in keys])
            ok = (mine.iloc[:4] == r + 0.1).all() and (mine.iloc[6:] == r + 0.2).all() and mine.iloc[4:6].isin([r + 0.1, r + 0.2]).all()
            right += bool(ok and not df.duplicated(KEY).any())
        wall = time.perf_counter() - t0
    print(json.dumps(dict(bench="replace", store=kind, where=where, rounds=rounds, right=right, wall_s=round(wall, 1))), flush=True)


_KILLED = """
import os, sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {bench!r})
import table_store as tb
store = tb._store({kind!r}, {url!r}, {options!r})
if {kind!r} == "ours":
    store.wd.lock_lease_s = 5.0  # a dead writer's table lock runs out after 5 s (the default is 120 s)
print("ready", flush=True)
i = 0
while True:
    i += 1
    store.replace([tb._metric(k, float(i)) for k in range(20)])
"""


def bench_killed(kind: str, url: str, options: dict, where: str, kills: int = 5) -> None:
    store = _store(kind, url, options)
    store.append([_metric(k, 0.0) for k in range(20)])
    results = []
    for _ in range(kills):
        code = textwrap.dedent(_KILLED.format(repo=str(REPO), bench=str(REPO / "benchmarks"), kind=kind, url=url, options=options))
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0 + random.random() * 2.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            df = store.fresh().read()
            readable, unique = True, not df.duplicated(KEY).any()
        except Exception:  # noqa: BLE001 - what is measured: whether a killed writer leaves the table unreadable
            readable, unique = False, False
        next_ms = _ms(lambda: store.fresh().replace([_metric(k, -5.0) for k in range(20)]))
        df = store.fresh().read()
        results.append(dict(readable=readable, unique=unique, rows_after=len(df), next_write_ms=round(next_ms),
                            raw_rows=store.fresh().raw_rows()))
    print(json.dumps(dict(bench="killed", store=kind, where=where, kills=kills,
                          readable=sum(r["readable"] for r in results), unique=sum(r["unique"] for r in results),
                          rows_after=sorted({r["rows_after"] for r in results}),
                          next_write_ms_max=max(r["next_write_ms"] for r in results),
                          raw_rows_max=max(r["raw_rows"] for r in results))), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="1,100,1000,10000")
    ap.add_argument("--s3-parts", default="1,100,1000")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--where", default="local,s3")
    ap.add_argument("--stores", default="ours,delta")
    ap.add_argument("--benches", default="append,replace,killed")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so `finally` stops the moto server
    moto = None
    try:
        for where in args.where.split(","):
            options: dict = {}
            if where == "s3":
                from s3_overhead import start_moto

                moto, endpoint = start_moto()
                os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                                  AWS_ENDPOINT_URL_S3=endpoint)
                options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
                           "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "conditional_put": "etag"}
            for kind in args.stores.split(","):
                for bench in args.benches.split(","):
                    if where == "s3":
                        import fsspec

                        bucket = f"bench-{uuid.uuid4().hex[:12]}"
                        fsspec.filesystem("s3").mkdir(bucket)
                        url = f"s3://{bucket}/work"
                    else:
                        url = tempfile.mkdtemp(prefix=f"table-store-{kind}-")
                    sizes = [int(x) for x in (args.s3_parts if where == "s3" else args.parts).split(",")]
                    if bench == "append":
                        bench_append(kind, url, options, sizes, where)
                    elif bench == "replace":
                        bench_replace(kind, url, options, args.rounds, where)
                    else:
                        bench_killed(kind, url, options, where)
    finally:
        if moto is not None:
            moto.kill()
        print(json.dumps(dict(loadavg=os.getloadavg())), flush=True)


if __name__ == "__main__":
    main()
