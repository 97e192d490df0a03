"""The part files of one table: listing, reading them to the table's schema, quarantine, compaction.

A table is a folder of Parquet parts (``docs/tables.md``). This module is what
``core/tables.py`` uses to turn that folder into one Arrow table:

- :func:`list_parts` lists the folder once: the visible parts with their size and a
  stamp (ETag on an object store, mtime locally) that changes whenever a part is
  rewritten, plus the leftovers of killed writers (hidden ``.new-part-*``/``.tmp-*``).
- :func:`conform` turns one part into the table's schema (old column names renamed,
  columns added later filled, compatible types cast) or raises :class:`PartMismatch`
  with one sentence. A part that does not conform is skipped by readers and moved into
  ``_quarantine/`` by the next writer; it never makes the table unreadable.
- :class:`PartCache` keeps each part's conformed table by (path, stamp), so a process
  that reads a table again (the dashboard, a writer checking which keys exist) fetches
  only the parts that are new or rewritten. On an object store the parts it needs are
  fetched concurrently, in one batch.
- :func:`compaction_due` says when a writer should merge the small parts into one, which
  keeps the number of parts (and so the cost of a cold read or an append) bounded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.schema import RENAMED_COLUMNS, TableSpec, _with_defaults

QUARANTINE = "_quarantine"  # a table's parts that do not conform to its schema (readers ignore `_` names)
COMPACT_AT = 4  # this many parts under COMPACT_TARGET_BYTES (or any repeated key) make the next writer compact
COMPACT_TARGET_BYTES = 64 * 2**20  # a part this big is left alone by compaction
NEW_PART_PREFIX = ".new-part-"  # a replace's hidden part; only a writer holding the table's lock writes one


class PartMismatch(ValueError):
    """A part that is not a Parquet file of the table's schema."""


@dataclass(frozen=True)
class Part:
    path: str
    size: int
    stamp: str  # changes whenever the object/file at `path` is rewritten


def _stamp(info: dict) -> str:
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or info.get("created")
    return f"{info.get('size')}:{tag}"


def list_parts(fs: Any, folder: str) -> tuple[list[Part], list[str]]:
    """(visible parts in name order, hidden leftovers of writers: ``.new-part-*`` and ``.tmp-*``)."""
    try:
        listing = fs.ls(folder, detail=True)
    except FileNotFoundError:
        return [], []
    parts, hidden = [], []
    for info in listing:
        name = os.path.basename(info["name"].rstrip("/"))
        if info.get("type") == "directory":
            continue
        if name.startswith((NEW_PART_PREFIX, ".tmp-")):
            hidden.append(info["name"])
        elif name.endswith(".parquet") and not name.startswith((".", "_")):
            parts.append(Part(info["name"], int(info.get("size") or 0), _stamp(info)))
    return sorted(parts, key=lambda p: p.path), sorted(hidden)


def conform(spec: TableSpec, table: pa.Table) -> pa.Table:
    """``table`` (one part as stored) in the table's schema; PartMismatch when it cannot be."""
    names = [RENAMED_COLUMNS.get(n, n) if n in RENAMED_COLUMNS and RENAMED_COLUMNS[n] not in table.column_names else n
             for n in table.column_names]
    table = table.rename_columns(names)
    columns = []
    for field in spec.schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        if col.type != field.type:
            try:
                if not _same_kind(col.type, field.type):
                    raise pa.ArrowInvalid("another kind of value")
                col = col.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise PartMismatch(f"its column '{field.name}' is {col.type}, the table declares {field.type}") from None
        columns.append(col)
    out = _with_defaults(spec, pa.Table.from_arrays(columns, schema=spec.schema.remove_metadata()))
    empty = [k for k in spec.key if out.column(k).null_count]
    if empty:
        raise PartMismatch(f"its key column(s) {empty} have empty values")
    return out


def _same_kind(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether a stored type may be read as the declared one: the same kind of value, maybe wider or
    narrower (int32/int64, float32/float64, a timestamp's unit, large/dictionary strings), never
    another kind (a number as a string, a float as a timestamp)."""
    if pa.types.is_dictionary(src):
        src = src.value_type
    kinds = (pa.types.is_integer, pa.types.is_floating, pa.types.is_timestamp, pa.types.is_boolean,
             lambda t: pa.types.is_string(t) or pa.types.is_large_string(t))
    if any(k(src) and k(dst) for k in kinds):
        return True
    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if any(k(src) for k in lists) and any(k(dst) for k in lists):
        return _same_kind(src.value_type, dst.value_type)
    return src == dst


def parse(spec: TableSpec, data: bytes | str, fs: Any = None) -> pa.Table:
    """One part (its bytes, or a local path) read and conformed; PartMismatch for anything wrong with its content."""
    if isinstance(data, bytes) and not data:
        raise PartMismatch("it has zero bytes")
    try:
        raw = pq.read_table(pa.BufferReader(data) if isinstance(data, bytes) else data, filesystem=fs)
    except (OSError, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        detail = str(e).splitlines()[0].rsplit("': ", 1)[-1]  # pyarrow's text without the path it names
        raise PartMismatch(f"it is not readable as Parquet ({detail[:160]})") from None
    return conform(spec, raw)


class PartCache:
    """One table's conformed parts by (path, stamp); a part that does not conform is kept as its reason."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, pa.Table | str]] = {}

    def load(self, fs: Any, spec: TableSpec, parts: list[Part], local: bool) -> dict[str, pa.Table | str]:
        """Each part's table (or the sentence saying why it does not conform). FileNotFoundError: a part went away."""
        out: dict[str, pa.Table | str] = {}
        missing = []
        for p in parts:
            hit = self._entries.get(p.path)
            if hit is not None and hit[0] == p.stamp:
                out[p.path] = hit[1]
            else:
                missing.append(p)
        if local:
            fetched = {p.path: (p.path if p.size else b"") for p in missing}
        else:  # one concurrent batch of GETs (s3fs), instead of one round trip after another
            wanted = [p for p in missing if p.size]
            fetched = {p.path: b"" for p in missing if not p.size}
            if wanted:
                for path, data in zip([p.path for p in wanted], _get_all(fs, wanted)):
                    if isinstance(data, FileNotFoundError):
                        raise data
                    if isinstance(data, BaseException):  # a transient store error: fail the read, never drop rows
                        raise OSError(f"could not read {path}: {data}") from data
                    fetched[path] = data
        for p in missing:
            try:
                value: pa.Table | str = parse(spec, fetched[p.path], fs if local else None)
            except PartMismatch as e:
                value = str(e)
            self._entries[p.path] = (p.stamp, value)
            out[p.path] = value
        listed = {p.path for p in parts}
        for gone in [path for path in self._entries if path not in listed]:  # removed or compacted away
            del self._entries[gone]
        return out


def _get_all(fs: Any, parts: list[Part]) -> list[bytes | BaseException]:
    """The parts' bytes, fetched concurrently; on S3 one GET each (the listing gave the sizes, so no HEAD)."""
    if not hasattr(fs, "_cat_file") or not hasattr(fs, "loop"):
        return [_or_error(fs.cat_file, p.path) for p in parts]
    import asyncio

    from fsspec.asyn import sync

    protocol = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)

    def one(p: Part) -> Any:
        if "s3" in protocol and p.size <= getattr(fs, "default_block_size", 0):
            return fs._cat_file(p.path, max_concurrency=1)  # a big part still downloads in concurrent ranges
        return fs._cat_file(p.path)

    async def gather() -> list:
        return await asyncio.gather(*[one(p) for p in parts], return_exceptions=True)

    return sync(fs.loop, gather)


def _or_error(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except OSError as e:  # returned, like asyncio.gather(return_exceptions=True)
        return e


def drop_repeated_keys(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """One row per key: the first (in the order the parts were read, i.e. by part name)."""
    if table.num_rows < 2:
        return table
    counts = table.select(list(key)).group_by(list(key), use_threads=False).aggregate([])
    if counts.num_rows == table.num_rows:
        return table
    indexed = table.select(list(key)).append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    first = indexed.group_by(list(key), use_threads=False).aggregate([("_row", "min")]).column("_row_min")
    return table.take(np.sort(first.to_numpy()))


def compaction_due(parts: list[Part], repeated_keys: bool) -> list[Part]:
    """The parts a writer should merge now (empty: none): every small part, once there are COMPACT_AT of them,
    or as soon as two parts hold one key (a killed compaction's or an old concurrent writer's leftovers)."""
    small = [p for p in parts if p.size < COMPACT_TARGET_BYTES]
    if len(small) >= COMPACT_AT or (repeated_keys and len(small) > 1):
        return small
    return []
