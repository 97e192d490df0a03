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
import fcntl
import hashlib
import io
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from core import objectstore
from core.paths import PathError, confined, fits_name
from core.schema import (  # noqa: F401 - the table contract is read from here by every stage
    LEGACY_IDENTITY,
    RENAMED_COLUMNS,
    TABLES,
    SchemaError,
    TableSpec,
    _old_schema,
    _with_defaults,
    now_utc,
    to_arrow,
)

log = logging.getLogger(__name__)
TMP_MAX_AGE_S = 3600.0  # a `.tmp-*` file this old in a table folder is a killed writer's leftover


class Workdir:
    """A workdir: the tables plus the media they point to (by relative path)."""

    def __init__(self, root: str | os.PathLike[str], create: bool = True):
        root = os.fspath(root)
        self.fs, path = fsspec.core.url_to_fs(root)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if not self.is_local:  # other writers add parts at any time: list the store, not a cached listing
            self.fs, path = fsspec.core.url_to_fs(root, use_listings_cache=False)
        self.root = path.rstrip("/") or "/"
        self.url = root
        self.upload_chunk_bytes = objectstore.UPLOAD_CHUNK_BYTES
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
            if not self._publish_part(self.path("tables", table, f"part-{digest}.parquet"), arrow):
                return 0  # a concurrent writer of the same keys published them first
        return len(keep)

    def replace(self, table: str, rows: pd.DataFrame | list[dict[str, Any]]) -> int:
        """Write rows, replacing those with the same key (e.g. a metric recomputed from more items).

        Under the table's lock: the new part is written to a hidden name, the old rows are
        removed (their parts rewritten atomically), then the new part is renamed into place.
        A crash in between leaves the old rows or none (never both), so a re-run recomputes.
        """
        spec = TABLES[table]
        arrow = to_arrow(table, rows)
        if arrow.num_rows == 0:
            return 0
        keys = list(zip(*[arrow.column(k).to_pylist() for k in spec.key]))
        digest = hashlib.sha1(repr((sorted(keys), uuid.uuid4().hex)).encode()).hexdigest()[:20]
        final = self.path("tables", table, f"part-{digest}.parquet")
        hidden = self.path("tables", table, f".new-part-{digest}.parquet")
        with self._lock(table):
            self.write_atomic(hidden, lambda f: pq.write_table(arrow, f))
            try:
                self._delete_locked(table, set(keys))
                self.fs.mv(hidden, final)
            finally:
                if self.fs.exists(hidden):
                    self.fs.rm(hidden)
        return arrow.num_rows

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
        with self._lock(table):
            return self._delete_locked(table, set(keys))

    def _delete_locked(self, table: str, drop: set[tuple]) -> int:
        spec = TABLES[table]
        removed = 0
        for part in self._readable(table, self._parts(table)):
            t = _with_defaults(spec, self._read_part(table, part))
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

    # damaged parts and leftovers -----------------------------------------
    def _scan(self, table: str, parts: list[str], columns: list[str] | None, filter: Any) -> pa.Table:
        spec = TABLES[table]
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
        return _with_defaults(spec, found if columns is None else found.select(columns))

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
