"""The tables that are the contract between stages: schemas, keys, and storage.

Each table is a Parquet dataset (a directory of part files) under a workdir, which
is a local path or an fsspec URL. Writes are atomic (a part file appears whole or
not at all) and idempotent (rows whose key is already in the table are dropped, and
a part's name is derived from the keys it holds, so a retried write replaces itself).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from core.paths import PathError, confined, fits_name

log = logging.getLogger(__name__)
TMP_MAX_AGE_S = 3600.0  # a `.tmp-*` file this old in a table folder is a killed writer's leftover

_point_list = pa.list_(pa.list_(pa.float32(), 2))
_ts = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: tuple[str, ...]
    schema: pa.Schema


def _spec(name: str, key: tuple[str, ...], *fields: tuple[str, pa.DataType]) -> TableSpec:
    return TableSpec(name, key, pa.schema([pa.field(n, t, nullable=n not in key) for n, t in fields]))


TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in [
        _spec(
            "labels",
            ("dataset", "split", "video_id", "entity_id"),
            ("dataset", pa.string()),
            ("split", pa.string()),
            ("video_id", pa.string()),
            ("entity_id", pa.int32()),
            ("category_id", pa.int32()),
            ("category", pa.string()),
            ("is_thing", pa.bool_()),
            ("frame_indices", pa.list_(pa.int32())),
            ("centers", _point_list),
            ("radii", pa.list_(pa.float32())),
            ("visible", pa.list_(pa.bool_())),
            ("area_px", pa.list_(pa.int32())),
            ("trajectory_source", pa.string()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("orig_height", pa.int32()),
            ("orig_width", pa.int32()),
            ("frames_path", pa.string()),
            ("config_digest", pa.string()),  # LabelsSettings.digest(): what the rows depend on
        ),
        _spec(
            "entity_embeddings",
            ("dataset", "video_id", "entity_id", "extractor"),
            ("dataset", pa.string()),
            ("video_id", pa.string()),
            ("entity_id", pa.int32()),
            ("extractor", pa.string()),
            ("vector", pa.list_(pa.float32())),
            ("timestep", pa.int32()),
            ("layer", pa.string()),
        ),
        _spec(
            "rejects",
            ("stage", "item"),
            ("stage", pa.string()),
            ("item", pa.string()),
            ("reason", pa.string()),
            ("at", _ts),
            ("error", pa.string()),  # the exception type (VideoError = a checked bad input)
            ("config_digest", pa.string()),  # the settings the item was tried with; another digest retries it
        ),
        _spec(
            "checkpoints",
            ("checkpoint_id",),
            ("checkpoint_id", pa.string()),
            ("kind", pa.string()),  # trained | reference | control-off (core/checkpoints.py; empty in old rows)
            ("parent", pa.string()),
            ("config", pa.string()),
            ("config_hash", pa.string()),
            ("step", pa.int64()),
            ("path", pa.string()),
            ("created_at", _ts),
        ),
        _spec(
            "train_log",
            ("checkpoint_id", "step"),
            ("checkpoint_id", pa.string()),
            ("step", pa.int64()),
            ("loss", pa.float64()),
            ("lr", pa.float64()),
            ("seconds", pa.float64()),
            ("samples_per_s", pa.float64()),
        ),
        _spec(
            "samples",
            ("checkpoint_id", "suite", "item_id", "seed"),
            ("checkpoint_id", pa.string()),
            ("suite", pa.string()),
            ("item_id", pa.string()),
            ("seed", pa.int64()),
            ("video_path", pa.string()),
            ("frames", pa.int32()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("seconds", pa.float64()),
        ),
        _spec(
            "objmc",
            ("checkpoint_id", "suite", "item_id", "entity_id"),
            ("checkpoint_id", pa.string()),
            ("suite", pa.string()),
            ("item_id", pa.string()),
            ("entity_id", pa.int32()),
            ("error_px", pa.float64()),
            ("per_frame", pa.list_(pa.float64())),
            ("tracker", pa.string()),
        ),
        _spec(
            "metrics",
            ("checkpoint_id", "suite", "metric", "backbone"),
            ("checkpoint_id", pa.string()),
            ("suite", pa.string()),
            ("metric", pa.string()),
            ("backbone", pa.string()),
            ("value", pa.float64()),
            ("ci_low", pa.float64()),
            ("ci_high", pa.float64()),
            ("n", pa.int64()),
            ("created_at", _ts),
        ),
        _spec(
            "votes",
            ("vote_id",),
            ("vote_id", pa.string()),
            ("voter", pa.string()),
            ("aspect", pa.string()),
            ("item_id", pa.string()),
            ("left_checkpoint", pa.string()),
            ("right_checkpoint", pa.string()),
            ("choice", pa.string()),
            ("shown_at", _ts),
            ("voted_at", _ts),
        ),
    ]
}


# Columns renamed since a workdir may have been written: {old name: new name}. Parts written
# before the rename are read (and rewritten by ``Workdir.delete``) under the new name, here and
# nowhere else, so old workdirs still open. The evaluation suites were called "benchmarks".
RENAMED_COLUMNS = {"benchmark": "suite"}


def _old_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the renamed columns under their old names."""
    back = {new: old for old, new in RENAMED_COLUMNS.items()}
    return pa.schema([f.with_name(back.get(f.name, f.name)) for f in schema])


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class SchemaError(ValueError):
    """Rows do not fit a table's declared schema."""


def to_arrow(table: str, rows: pd.DataFrame | list[dict[str, Any]]) -> pa.Table:
    """Validate rows against the table's schema (types, required keys, unique keys)."""
    spec = TABLES[table]
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    names = set(spec.schema.names)
    for i, r in enumerate(records):
        unknown = set(r) - names
        missing = [k for k in spec.key if r.get(k) is None]
        if unknown:
            raise SchemaError(f"table '{table}' row {i}: unknown columns {sorted(unknown)}")
        if missing:
            raise SchemaError(f"table '{table}' row {i}: key columns {missing} are empty")
    try:
        arrow = pa.Table.from_pylist(records, schema=spec.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as err:
        raise SchemaError(f"table '{table}': rows do not match the schema: {err}") from None
    keys = [tuple(r[k] for k in spec.key) for r in records]
    if len(set(keys)) != len(keys):
        raise SchemaError(f"table '{table}': the rows repeat a key {spec.key}")
    return arrow


class Workdir:
    """A workdir: the tables plus the media they point to (by relative path)."""

    def __init__(self, root: str | os.PathLike[str], create: bool = True):
        root = os.fspath(root)
        self.fs, path = fsspec.core.url_to_fs(root)
        self.root = path.rstrip("/") or "/"
        self.url = root
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self._current_parts: set[str] = set()  # parts known to have today's column names
        self._swept: set[str] = set()
        if create:
            self.fs.makedirs(self.root, exist_ok=True)
        elif not self.fs.isdir(self.root):
            raise FileNotFoundError(f"workdir {root} does not exist; check the path (a run of any stage creates it)")

    # paths -------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """Absolute path (in the workdir's filesystem) of a relative path, which must stay inside the workdir.

        Every path a stage opens from a table value goes through here: an absolute
        path, a ``..`` that climbs out or a symlink that points out raises PathError.
        """
        return confined(self.root, *parts, local=self.is_local, what="workdir path")

    def local_path(self, *parts: str) -> str:
        if not self.is_local:
            raise RuntimeError(f"workdir {self.url} is not on the local filesystem")
        return self.path(*parts)

    def table_dir(self, table: str) -> str:
        if table not in TABLES:
            raise KeyError(f"unknown table '{table}'; tables: {', '.join(TABLES)}")
        return self.path("tables", table)

    # reading -----------------------------------------------------------
    def _parts(self, table: str) -> list[str]:
        """The table's part files, without zero-byte ones (reported by :meth:`damaged_parts`)."""
        d = self.table_dir(table)
        if not self.fs.exists(d):
            return []
        files = [f for f in self.fs.ls(d, detail=True) if f["name"].endswith(".parquet")]
        files = [f for f in files if not os.path.basename(f["name"]).startswith((".", "_"))]
        empty = sorted(f["name"] for f in files if not f.get("size"))
        if empty:
            self._report_damaged(table, empty, "zero bytes")
        return sorted(f["name"] for f in files if f.get("size"))

    def read_arrow(self, table: str, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
        spec = TABLES[table]
        parts = self._parts(table)
        if parts:
            try:
                return self._scan(table, parts, columns, filter)
            except (OSError, pa.ArrowInvalid):
                parts = self._readable(table, parts)  # one damaged part must not hide the rest
        if not parts:
            schema = spec.schema if columns is None else pa.schema([spec.schema.field(c) for c in columns])
            return schema.empty_table()
        return self._scan(table, parts, columns, filter)

    def _old_parts(self, table: str, parts: list[str]) -> set[str]:
        """The parts written before a column of ``table`` was renamed (see ``RENAMED_COLUMNS``)."""
        if not set(RENAMED_COLUMNS.values()) & set(TABLES[table].schema.names):
            return set()
        old = set()
        for part in parts:
            if part in self._current_parts:
                continue
            if set(RENAMED_COLUMNS) & set(pq.read_schema(part, filesystem=self.fs).names):
                old.add(part)
            else:
                self._current_parts.add(part)  # a part never goes back to an old schema
        return old

    def _read_part(self, table: str, part: str) -> pa.Table:
        spec = TABLES[table]
        if self._old_parts(table, [part]):
            return pq.read_table(part, filesystem=self.fs, schema=_old_schema(spec.schema)).rename_columns(spec.schema.names)
        return pq.read_table(part, filesystem=self.fs, schema=spec.schema)

    def read(self, table: str, columns: list[str] | None = None, filter: Any = None) -> pd.DataFrame:
        return self.read_arrow(table, columns, filter).to_pandas()

    def keys(self, table: str) -> set[tuple]:
        spec = TABLES[table]
        t = self.read_arrow(table, columns=list(spec.key))
        cols = [t.column(k).to_pylist() for k in spec.key]
        return set(zip(*cols))

    def mtime(self, table: str) -> float:
        """Latest modification time of any part (0 when empty): a cache key for readers."""
        times = [self.fs.modified(p).timestamp() for p in self._parts(table)]
        return max(times, default=0.0)

    # writing -----------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, table: str) -> Iterator[None]:
        """Serialise writers of one table on a local workdir (other processes included)."""
        if not self.is_local:
            yield
            return
        d = self.table_dir(table)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "_lock"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def append(self, table: str, rows: pd.DataFrame | list[dict[str, Any]]) -> int:
        """Add rows whose key is not in the table yet; return how many were written."""
        spec = TABLES[table]
        arrow = to_arrow(table, rows)
        if arrow.num_rows == 0:
            return 0
        with self._lock(table):
            self._sweep_tmp(table)
            existing = self.keys(table)
            keys = list(zip(*[arrow.column(k).to_pylist() for k in spec.key]))
            keep = [i for i, k in enumerate(keys) if k not in existing]
            if not keep:
                return 0
            arrow = arrow.take(keep)
            digest = hashlib.sha1(repr(sorted(keys[i] for i in keep)).encode()).hexdigest()[:20]
            self.write_atomic(self.path("tables", table, f"part-{digest}.parquet"), lambda f: pq.write_table(arrow, f))
        return len(keep)

    def delete(self, table: str, keys: Iterable[tuple]) -> int:
        """Remove rows by key (rewrites the parts that hold them, each atomically)."""
        spec = TABLES[table]
        drop = set(keys)
        removed = 0
        with self._lock(table):
            for part in self._readable(table, self._parts(table)):
                t = self._read_part(table, part)
                part_keys = list(zip(*[t.column(k).to_pylist() for k in spec.key]))
                keep = [i for i, k in enumerate(part_keys) if k not in drop]
                if len(keep) == t.num_rows:
                    continue
                removed += t.num_rows - len(keep)
                if keep:
                    kept = t.take(keep)
                    self.write_atomic(part, lambda f, kept=kept: pq.write_table(kept, f))
                else:
                    self.fs.rm(part)
        return removed

    def write_atomic(self, path: str, write: Any) -> None:
        """Call ``write(file_object)`` so that ``path`` appears whole or not at all."""
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if self.is_local:
            tmp = f"{parent}/{_tmp_name(os.path.basename(path))}"
            try:
                with open(tmp, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            # Object stores publish an object only when its upload completes.
            with self.fs.open(path, "wb") as f:
                write(f)

    def write_dir_atomic(self, relpath: str, write: Any) -> None:
        """Call ``write(folder)`` so that the folder ``relpath`` appears whole or not at all.

        The folder is written as a hidden sibling and renamed into place; one that
        already exists is kept (a retried write never replaces good output). Local only:
        the frameworks that write folders (``save_pretrained``) need a real path.
        """
        final = Path(self.local_path(relpath))
        if final.exists():
            return
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            write(tmp)
            if not final.exists():
                os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    # damaged parts and leftovers -----------------------------------------
    def _scan(self, table: str, parts: list[str], columns: list[str] | None, filter: Any) -> pa.Table:
        spec = TABLES[table]
        old = self._old_parts(table, parts)
        if not old:
            ds = pads.dataset(parts, schema=spec.schema, filesystem=self.fs, format="parquet")
            return ds.to_table(columns=columns, filter=filter)
        new = [p for p in parts if p not in old]
        renamed = pads.dataset(sorted(old), schema=_old_schema(spec.schema), filesystem=self.fs, format="parquet").to_table()
        tables = [pads.dataset(renamed.rename_columns(spec.schema.names)).to_table(columns=columns, filter=filter)]
        if new:
            tables.insert(0, pads.dataset(new, schema=spec.schema, filesystem=self.fs, format="parquet").to_table(columns=columns, filter=filter))
        return pa.concat_tables(tables)

    def _readable(self, table: str, parts: list[str]) -> list[str]:
        """The parts whose Parquet footer reads; the others are reported and left out."""
        good, bad = [], []
        for p in parts:
            try:
                pq.read_metadata(p, filesystem=self.fs)
                good.append(p)
            except (OSError, pa.ArrowInvalid):
                bad.append(p)
        if bad:
            self._report_damaged(table, bad, "not readable as Parquet")
        return good

    def _report_damaged(self, table: str, parts: list[str], why: str) -> None:
        for p in parts:
            if p not in self._swept:
                self._swept.add(p)
                log.warning("table '%s': part %s is %s and is skipped; move it out of %s (its rows are lost, a re-run of the "
                            "stage writes them again)", table, p, why, self.table_dir(table))

    def damaged_parts(self, table: str) -> list[str]:
        """Part files of ``table`` that are skipped because they are empty or unreadable (for ``status``)."""
        d = self.table_dir(table)
        if not self.fs.exists(d):
            return []
        files = [f for f in self.fs.ls(d, detail=True) if f["name"].endswith(".parquet")
                 and not os.path.basename(f["name"]).startswith((".", "_"))]
        empty = [f["name"] for f in files if not f.get("size")]
        sized = [f["name"] for f in files if f.get("size")]
        return sorted(empty + sorted(set(sized) - set(self._readable(table, sized))))

    def _sweep_tmp(self, table: str, max_age_s: float = TMP_MAX_AGE_S) -> int:
        """Remove ``.tmp-*`` files older than ``max_age_s`` from a table folder (killed writers'); once per table."""
        if not self.is_local or ("sweep:" + table) in self._swept:
            return 0
        self._swept.add("sweep:" + table)
        d, removed, cutoff = self.table_dir(table), 0, time.time() - max_age_s
        for entry in os.scandir(d) if os.path.isdir(d) else ():
            if entry.name.startswith(".tmp-") and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        os.remove(entry.path)
                        removed += 1
        return removed


def _tmp_name(name: str) -> str:
    """A hidden temporary sibling name for ``name`` that fits in one path component."""
    tmp = f".tmp-{uuid.uuid4().hex}-{name}"
    return tmp if fits_name(tmp) else f".tmp-{uuid.uuid4().hex}"


__all__ = ["TABLES", "PathError", "SchemaError", "TableSpec", "Workdir", "now_utc", "to_arrow"]
