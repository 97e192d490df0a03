"""Atomic, idempotent writes where there is no rename and no lock: an object store (S3 through s3fs).

A local workdir publishes a file by renaming a temporary one under a file lock. An
object store has neither, so on a remote workdir:

- :func:`create_once` publishes an object in one request: a single PUT, or for a large
  object one completed multipart upload. Until that request completes nothing is
  listed, so readers never see an upload in progress, and a writer killed half-way
  leaves no object (at most an unfinished multipart upload, which no listing shows).
  It is a *conditional* create (``If-None-Match: *``): when the object already exists
  the store refuses it and nothing is overwritten.
- A table part's name derives from the keys it holds, so two writers of the same keys
  race for one name and leave one copy. Two writers whose key sets merely overlap
  (each saw neither's part before writing) leave two parts sharing some keys; readers
  keep one row per key (:func:`drop_repeated_keys`), the row of the first part in name
  order, so every reader sees the same rows.
- A folder (a checkpoint written by ``save_pretrained``) is uploaded file by file and
  published by its manifest, written last with :func:`create_once`; a folder without
  its manifest does not exist for readers (:func:`folder_complete`). Readers download a
  published folder into a local cache (:func:`fetch_folder`): published folders never
  change, so a cached copy stays valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

MANIFEST = "_complete.json"  # a published folder's file list; written last
UPLOAD_CHUNK_BYTES = 50 * 2**20  # an object up to twice this size goes up in one PUT


def is_s3(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "s3" in protocol


def create_once(fs: Any, path: str, data: bytes, chunk_bytes: int = UPLOAD_CHUNK_BYTES) -> bool:
    """Publish ``data`` at ``path`` in one request unless an object is there; False when one was."""
    kwargs = {"chunksize": chunk_bytes} if is_s3(fs) else {}
    try:
        fs.pipe_file(path, data, mode="create", **kwargs)
    except FileExistsError:
        return False
    return True


def put_whole(fs: Any, path: str, data: bytes) -> None:
    """Publish (or replace) ``data`` at ``path`` in one request: never a half-written object."""
    fs.pipe_file(path, data)


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


# --- folders ----------------------------------------------------------------------------


def folder_complete(fs: Any, root: str) -> bool:
    """Whether the folder at ``root`` was published whole (its manifest exists)."""
    fs.invalidate_cache(root)
    return fs.exists(f"{root}/{MANIFEST}")


def put_folder(fs: Any, root: str, local: Path) -> bool:
    """Upload the local folder ``local`` to ``root``, then publish it; False if it was already published."""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    sizes = {p.relative_to(local).as_posix(): p.stat().st_size for p in files}
    if MANIFEST in sizes:
        raise ValueError(f"a folder to publish may not hold a file named {MANIFEST} ({local})")
    for rel in sizes:
        fs.put_file(str(local / rel), f"{root}/{rel}")
    return create_once(fs, f"{root}/{MANIFEST}", json.dumps({"files": sizes}, sort_keys=True).encode())


def cache_root() -> Path:
    """Where downloaded folders are kept: ``DRAGANYTHING_CACHE``, else ``~/.cache/draganything``."""
    return Path(os.environ.get("DRAGANYTHING_CACHE") or Path.home() / ".cache" / "draganything") / "folders"


def fetch_folder(fs: Any, root: str, only: str | None = None) -> Path:
    """A local copy of the published folder ``root`` (just its subfolder ``only``, if given), cached."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    name = hashlib.sha1(f"{protocol}://{root}|{only or ''}".encode()).hexdigest()[:20]
    dest = cache_root() / name
    if dest.is_dir():
        return dest
    try:
        manifest = json.loads(fs.cat_file(f"{root}/{MANIFEST}"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{protocol}://{root} is not a published folder (no {MANIFEST}): it was never written whole") from None
    wanted = {rel: size for rel, size in manifest["files"].items() if only is None or rel.startswith(only.rstrip("/") + "/")}
    tmp = dest.parent / f".tmp-{uuid.uuid4().hex}"
    try:
        for rel, size in wanted.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root}/{rel}", str(target))
            if target.stat().st_size != size:
                raise OSError(f"{protocol}://{root}/{rel} has {target.stat().st_size} bytes, its manifest says {size}")
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # another process of this machine fetched it first: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def local_folder(location: str) -> str:
    """A folder given as a local path or an fsspec URL (``s3://...``), as a local path (downloaded and cached)."""
    if "://" not in location or location.startswith("file://"):
        return location.removeprefix("file://")
    import fsspec

    fs, root = fsspec.core.url_to_fs(location, use_listings_cache=False)
    return str(fetch_folder(fs, root.rstrip("/")))
