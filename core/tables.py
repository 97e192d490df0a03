"""The tables that are the contract between stages: schemas, keys, and storage.

Each table is a Parquet dataset (a directory of part files) under a workdir, which
is a local path or an fsspec URL. Writes are atomic (a part file appears whole or
not at all) and idempotent (rows whose key is already in the table are dropped, and
a part's name is derived from the keys it holds, so a retried write replaces itself).
On an object store (no rename, no lock) the same guarantees come from conditional
creates and readers that keep one row per key: ``core/objectstore.py``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from core import objectstore

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

    def __init__(self, root: str | os.PathLike[str]):
        root = os.fspath(root)
        self.fs, path = fsspec.core.url_to_fs(root)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if not self.is_local:  # other writers add parts at any time: list the store, not a cached listing
            self.fs, path = fsspec.core.url_to_fs(root, use_listings_cache=False)
        self.root = path.rstrip("/")
        self.url = root
        self.upload_chunk_bytes = objectstore.UPLOAD_CHUNK_BYTES
        self._current_parts: set[str] = set()  # parts known to have today's column names
        self.fs.makedirs(self.root, exist_ok=True)

    # paths -------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """Absolute path (in the workdir's filesystem) of a relative media path."""
        return "/".join([self.root, *[p.strip("/") for p in parts]])

    def location(self, *parts: str) -> str:
        """Where a relative path lives, for another process or node: a local path, or a URL on a remote workdir."""
        if self.is_local:
            return self.path(*parts)
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, (tuple, list)) else self.fs.protocol
        return f"{protocol}://{self.path(*parts)}"

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
        d = self.table_dir(table)
        if not self.fs.exists(d):
            return []
        files = [f for f in self.fs.ls(d, detail=False) if f.endswith(".parquet")]
        return sorted(f for f in files if not os.path.basename(f).startswith((".", "_")))

    def read_arrow(self, table: str, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
        spec = TABLES[table]
        parts = self._parts(table)
        if not parts:
            schema = spec.schema if columns is None else pa.schema([spec.schema.field(c) for c in columns])
            return schema.empty_table()
        # Key columns are always read: an object store may hold one key in two parts (objectstore.drop_repeated_keys).
        wanted = None if columns is None else list(dict.fromkeys([*spec.key, *columns]))
        old = self._old_parts(table, parts)
        if not old:
            ds = pads.dataset(parts, schema=spec.schema, filesystem=self.fs, format="parquet")
            found = ds.to_table(columns=wanted, filter=filter)
        else:
            new = [p for p in parts if p not in old]
            renamed = pads.dataset(sorted(old), schema=_old_schema(spec.schema), filesystem=self.fs, format="parquet").to_table()
            tables = [pads.dataset(renamed.rename_columns(spec.schema.names)).to_table(columns=wanted, filter=filter)]
            if new:
                tables.insert(0, pads.dataset(new, schema=spec.schema, filesystem=self.fs, format="parquet").to_table(columns=wanted, filter=filter))
            found = pa.concat_tables(tables)
        found = objectstore.drop_repeated_keys(found, spec.key)
        return found if columns is None else found.select(columns)

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
            existing = self.keys(table)
            keys = list(zip(*[arrow.column(k).to_pylist() for k in spec.key]))
            keep = [i for i, k in enumerate(keys) if k not in existing]
            if not keep:
                return 0
            arrow = arrow.take(keep)
            digest = hashlib.sha1(repr(sorted(keys[i] for i in keep)).encode()).hexdigest()[:20]
            if not self._publish_part(self.path("tables", table, f"part-{digest}.parquet"), arrow):
                return 0  # a concurrent writer of the same keys published them first
        return len(keep)

    def _publish_part(self, path: str, arrow: pa.Table) -> bool:
        """Make a part visible whole; False when a part of that name (the same keys) already exists.

        Local: a temp file renamed into place (under the table's lock). Remote: one
        conditional create (``objectstore.create_once``): no rename, no lock.
        """
        if self.is_local:
            self.write_atomic(path, lambda f: pq.write_table(arrow, f))
            return True
        buf = pa.BufferOutputStream()
        pq.write_table(arrow, buf)
        return objectstore.create_once(self.fs, path, buf.getvalue().to_pybytes(), self.upload_chunk_bytes)

    def delete(self, table: str, keys: Iterable[tuple]) -> int:
        """Remove rows by key (rewrites the parts that hold them, each atomically)."""
        spec = TABLES[table]
        drop = set(keys)
        removed = 0
        with self._lock(table):
            for part in self._parts(table):
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
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{os.path.basename(path)}"
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
            # Written in memory first: a file object would publish what was written before a failure.
            buf = io.BytesIO()
            write(buf)
            objectstore.put_whole(self.fs, path, buf.getvalue())

    def write_dir_atomic(self, relpath: str, write: Any) -> None:
        """Call ``write(folder)`` so that the folder ``relpath`` appears whole or not at all.

        ``write`` gets a local folder (the frameworks that write folders, ``save_pretrained``,
        need a real path). Local: a hidden sibling renamed into place. Remote: a local temp
        folder uploaded and published by its manifest (``objectstore.put_folder``). A folder
        that already exists is kept (a retried write never replaces good output).
        """
        if self.has_dir(relpath):
            return
        if not self.is_local:
            with tempfile.TemporaryDirectory(prefix="draganything-upload-") as tmp:
                write(Path(tmp))
                objectstore.put_folder(self.fs, self.path(relpath), Path(tmp))
            return
        final = Path(self.local_path(relpath))
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            write(tmp)
            if not final.exists():
                os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def has_dir(self, relpath: str) -> bool:
        """Whether the folder ``relpath`` was written whole (by :meth:`write_dir_atomic`)."""
        if self.is_local:
            return os.path.isdir(self.local_path(relpath))
        return objectstore.folder_complete(self.fs, self.path(relpath))

    def local_dir(self, relpath: str, only: str | None = None) -> Path:
        """A local folder with the contents of the folder ``relpath``: itself on a local workdir, else a
        cached download of it (of its subfolder ``only``, if given; the returned folder is still ``relpath``'s)."""
        if self.is_local:
            return Path(self.local_path(relpath))
        return objectstore.fetch_folder(self.fs, self.path(relpath), only)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))
