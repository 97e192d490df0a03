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
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from core import objectstore
from core.parts import COMPACT_AT, NEW_PART_PREFIX, QUARANTINE, Part, PartCache, compaction_due, drop_repeated_keys, list_parts
from core.paths import PathError, confined, fits_name
from core.schema import (  # noqa: F401 - the table contract is read from here by every stage
    LEGACY_IDENTITY,
    RENAMED_COLUMNS,
    TABLES,
    SchemaError,
    TableSpec,
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
        self.lock_lease_s = objectstore.LOCK_LEASE_S
        self._cache: dict[str, PartCache] = {}  # per table: parts already read, by (path, stamp)
        self._reported: set[str] = set()  # parts already warned about
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
    def _load(self, table: str) -> tuple[list[Part], list[str], dict[str, pa.Table | str]]:
        """(parts, hidden leftovers, each part's conformed rows or why it does not conform), from one listing."""
        cache = self._cache.setdefault(table, PartCache())
        for _ in range(5):
            parts, hidden = list_parts(self.fs, self.table_dir(table))
            try:
                return parts, hidden, cache.load(self.fs, TABLES[table], parts, self.is_local)
            except FileNotFoundError:
                continue  # a writer compacted or rewrote a part between the listing and the read: list again
        raise OSError(f"the parts of table '{table}' kept changing while they were read (5 listings); read it again")

    def _rows(self, table: str) -> tuple[pa.Table, list[Part], list[str], dict[str, pa.Table | str], bool]:
        """(one row per key, parts, hidden leftovers, per-part rows, whether two parts held one key)."""
        spec = TABLES[table]
        parts, hidden, loaded = self._load(table)
        good = []
        for p in parts:
            if isinstance(loaded[p.path], str):
                self._report_bad(table, p.path, loaded[p.path])
            else:
                good.append(loaded[p.path])
        rows = pa.concat_tables(good) if good else spec.schema.empty_table()
        unique = drop_repeated_keys(rows, spec.key)
        return unique, parts, hidden, loaded, unique.num_rows != rows.num_rows

    def read_arrow(self, table: str, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
        rows = self._rows(table)[0]
        if filter is not None:
            rows = rows.filter(filter)
        return rows if columns is None else rows.select(columns)

    def read(self, table: str, columns: list[str] | None = None, filter: Any = None) -> pd.DataFrame:
        return self.read_arrow(table, columns, filter).to_pandas()

    def keys(self, table: str) -> set[tuple]:
        spec = TABLES[table]
        t = self.read_arrow(table, columns=list(spec.key))
        cols = [t.column(k).to_pylist() for k in spec.key]
        return set(zip(*cols))

    # writing -----------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, table: str) -> Iterator[objectstore.ObjectLock | None]:
        """Serialise the writers of one table: a file lock locally, a lock object on a store (other nodes included)."""
        d = self.table_dir(table)
        if not self.is_local:
            with objectstore.ObjectLock(self.fs, f"{d}/_lock", lease_s=self.lock_lease_s) as lock:
                yield lock
            return
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "_lock"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield None
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _prepare(self, table: str, lock: objectstore.ObjectLock | None) -> tuple[pa.Table, list[Part], dict, bool]:
        """Under the lock: sweep killed writers' leftovers, quarantine the parts that do not conform, read the rows."""
        rows, parts, hidden, loaded, repeated = self._rows(table)
        self._sweep(hidden, lock)
        good = []
        for p in parts:
            if isinstance(loaded[p.path], str):
                _check(lock)
                self._quarantine(table, p.path, loaded[p.path])
            else:
                good.append(p)
        return rows, good, loaded, repeated

    def append(self, table: str, rows: pd.DataFrame | list[dict[str, Any]]) -> int:
        """Add rows whose key is not in the table yet; return how many were written."""
        spec = TABLES[table]
        arrow = to_arrow(table, rows)
        if arrow.num_rows == 0:
            return 0
        with self._lock(table) as lock:
            existing, parts, loaded, repeated = self._prepare(table, lock)
            arrow = arrow.take(_absent(arrow, existing, spec.key))
            if arrow.num_rows == 0:
                return 0
            keys = sorted(zip(*[arrow.column(k).to_pylist() for k in spec.key]))
            path = self.path("tables", table, f"part-{hashlib.sha1(repr(keys).encode()).hexdigest()[:20]}.parquet")
            _check(lock)
            if not self._publish_part(path, arrow):
                return 0  # a part of these very keys exists (written before the lock existed)
            known = [(p, loaded[p.path]) for p in parts] + [(Part(path, 0, ""), arrow)]
            self._compact(table, lock, len(known), repeated, sorted(known, key=lambda pt: pt[0].path))
        return arrow.num_rows

    def replace(self, table: str, rows: pd.DataFrame | list[dict[str, Any]]) -> int:
        """Write rows, replacing those with the same key (e.g. a metric recomputed from more items).

        Under the table's lock: the new part is written to a hidden name (locally; on an object
        store it is held in memory), the old rows are removed (their parts rewritten whole), then
        the new part is published. A crash in between leaves the old rows or none (never both),
        so a re-run recomputes.
        """
        spec = TABLES[table]
        arrow = to_arrow(table, rows)
        if arrow.num_rows == 0:
            return 0
        keys = list(zip(*[arrow.column(k).to_pylist() for k in spec.key]))
        digest = hashlib.sha1(repr((sorted(keys), uuid.uuid4().hex)).encode()).hexdigest()[:20]
        final = self.path("tables", table, f"part-{digest}.parquet")
        with self._lock(table) as lock:
            _, parts, loaded, repeated = self._prepare(table, lock)
            if self.is_local:
                hidden = self.path("tables", table, f"{NEW_PART_PREFIX}{digest}.parquet")
                self.write_atomic(hidden, lambda f: pq.write_table(arrow, f))
                try:
                    self._delete_locked(table, arrow, parts, loaded, lock)
                    os.replace(hidden, final)
                finally:
                    if os.path.exists(hidden):
                        os.remove(hidden)
            else:
                data = _parquet_bytes(arrow)
                self._delete_locked(table, arrow, parts, loaded, lock)
                _check(lock)
                objectstore.create_once(self.fs, final, data, self.upload_chunk_bytes)
            self._compact(table, lock, len(parts) + 1, repeated)
        return arrow.num_rows

    def _publish_part(self, path: str, arrow: pa.Table) -> bool:
        """Make a part visible whole; False when a part of that name already exists (on an object store).

        Local: a temp file renamed into place. Remote: one conditional create (``objectstore.create_once``).
        """
        if self.is_local:
            self.write_atomic(path, lambda f: pq.write_table(arrow, f))
            return True
        return objectstore.create_once(self.fs, path, _parquet_bytes(arrow), self.upload_chunk_bytes)

    def delete(self, table: str, keys: Iterable[tuple]) -> int:
        """Remove rows by key (rewrites the parts that hold them, each whole)."""
        spec = TABLES[table]
        drop = pa.Table.from_pylist([dict(zip(spec.key, k)) for k in set(keys)],
                                    schema=pa.schema([spec.schema.field(k) for k in spec.key]))
        with self._lock(table) as lock:
            _, parts, loaded, repeated = self._prepare(table, lock)
            removed = self._delete_locked(table, drop, parts, loaded, lock)
            self._compact(table, lock, len(parts), repeated)
        return removed

    def _delete_locked(self, table: str, drop: pa.Table, parts: list[Part], loaded: dict, lock: Any) -> int:
        """Remove the rows whose key is in ``drop`` from ``parts``; each part that held one is rewritten whole."""
        key, removed = TABLES[table].key, 0
        for part in parts:
            t = loaded[part.path]
            keep = _absent(t, drop, key)
            if len(keep) == t.num_rows:
                continue
            removed += t.num_rows - len(keep)
            _check(lock)
            if len(keep):
                kept = t.take(keep)
                if self.is_local:
                    self.write_atomic(part.path, lambda f, kept=kept: pq.write_table(kept, f))
                else:
                    objectstore.put_whole(self.fs, part.path, _parquet_bytes(kept))
            else:
                self.fs.rm(part.path)
        return removed

    def _compact(self, table: str, lock: Any, n_parts: int, repeated: bool,
                 known: list[tuple[Part, pa.Table]] | None = None) -> None:
        """Merge the table's small parts into one when there are COMPACT_AT of them or two share a key.

        ``known``: the table's parts and their rows as the caller left them (an append: what it
        read plus the part it wrote), so no second listing or read is needed; else they are read.
        The merged part is published before the parts it replaces are removed, so a reader (or a
        crash) in between sees each row twice, never not at all; readers keep one row per key.
        """
        if n_parts < COMPACT_AT and not repeated:
            return
        if known is None:
            _, parts, _, loaded, repeated = self._rows(table)
            known = [(p, loaded[p.path]) for p in parts if not isinstance(loaded[p.path], str)]
        due = compaction_due([p for p, _ in known], repeated)
        if not due:
            return
        rows = {p.path: t for p, t in known}
        merged = drop_repeated_keys(pa.concat_tables([rows[p.path] for p in due]), TABLES[table].key)
        _check(lock)
        self._publish_part(self.path("tables", table, f"part-{uuid.uuid4().hex[:20]}.parquet"), merged)
        _check(lock)
        self.fs.rm([p.path for p in due])

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
    def _report_bad(self, table: str, part: str, why: str) -> None:
        if part not in self._reported:
            self._reported.add(part)
            log.warning("table '%s': part %s is skipped: %s; the next write to the table moves it into %s/ (move it "
                        "out yourself to keep it; its rows are lost, a re-run of the stage writes them again)",
                        table, part, why, QUARANTINE)

    def _quarantine(self, table: str, part: str, why: str) -> str:
        """Move a part that does not conform into ``_quarantine/``, with a ``.why`` file saying why."""
        folder = f"{self.table_dir(table)}/{QUARANTINE}"
        name = os.path.basename(part)
        dest = f"{folder}/{name}"
        if self.fs.exists(dest):
            dest = f"{folder}/{name.removesuffix('.parquet')}-{uuid.uuid4().hex[:8]}.parquet"
        self.fs.makedirs(folder, exist_ok=True)
        objectstore.put_whole(self.fs, dest + ".why", f"{why}\n".encode())
        if self.is_local:
            os.replace(part, dest)
        else:
            self.fs.copy(part, dest)
            self.fs.rm(part)
        log.warning("table '%s': part %s moved to %s because %s", table, part, dest, why)
        return dest

    def damaged_parts(self, table: str) -> list[str]:
        """Parts of ``table`` that readers skip because they do not conform (empty, unreadable, other types)."""
        parts, _, loaded = self._load(table)
        return [p.path for p in parts if isinstance(loaded[p.path], str)]

    def quarantined_parts(self, table: str) -> dict[str, str]:
        """Parts moved into the table's ``_quarantine/`` folder, each with the reason (for ``status``)."""
        folder = f"{self.table_dir(table)}/{QUARANTINE}"
        if not self.fs.exists(folder):
            return {}
        out = {}
        for path in sorted(self.fs.ls(folder, detail=False)):
            if path.endswith(".parquet"):
                try:
                    out[path] = self.fs.cat_file(path + ".why").decode().strip()
                except FileNotFoundError:
                    out[path] = "no reason recorded"
        return out

    def _sweep(self, hidden: list[str], lock: Any) -> None:
        """Remove killed writers' leftovers: every ``.new-part-*`` (only a holder of the lock, which we are,
        writes one) and ``.tmp-*`` files older than TMP_MAX_AGE_S."""
        cutoff = time.time() - TMP_MAX_AGE_S
        for path in hidden:
            with contextlib.suppress(FileNotFoundError):
                name = os.path.basename(path)
                if name.startswith(NEW_PART_PREFIX) or (self.is_local and os.stat(path).st_mtime < cutoff):
                    _check(lock)
                    self.fs.rm(path)
                    log.warning("removed %s, left by a killed writer", path)


def _check(lock: objectstore.ObjectLock | None) -> None:
    """Before each change under an object-store lock: renew its lease, or stop if it was lost."""
    if lock is not None:
        lock.check()


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return buf.getvalue().to_pybytes()


def _absent(rows: pa.Table, other: pa.Table, key: tuple[str, ...]) -> np.ndarray:
    """Indices (ascending) of the rows of ``rows`` whose key is not in ``other``."""
    if other.num_rows == 0 or rows.num_rows == 0:
        return np.arange(rows.num_rows)
    left = rows.select(list(key)).append_column("_i", pa.array(np.arange(rows.num_rows)))
    right = other.select(list(key))
    return np.sort(left.join(right, keys=list(key), join_type="left anti", use_threads=False).column("_i").to_numpy())


def _tmp_name(name: str) -> str:
    """A hidden temporary sibling name for ``name`` that fits in one path component."""
    tmp = f".tmp-{uuid.uuid4().hex}-{name}"
    return tmp if fits_name(tmp) else f".tmp-{uuid.uuid4().hex}"


__all__ = ["TABLES", "PathError", "SchemaError", "TableSpec", "Workdir", "now_utc", "to_arrow"]
