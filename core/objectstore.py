"""Atomic, idempotent writes where there is no rename and no lock: an object store (S3 through s3fs).

A local workdir publishes a file by renaming a temporary one under a file lock. An
object store has neither, so on a remote workdir:

- :func:`create_once` publishes an object in one request: a single PUT, or for a large
  object one completed multipart upload. Until that request completes nothing is
  listed, so readers never see an upload in progress, and a writer killed half-way
  leaves no object (at most an unfinished multipart upload, which no listing shows).
  It is a *conditional* create (``If-None-Match: *``): when the object already exists
  the store refuses it and nothing is overwritten.
- The writers of one table are serialised by a lock object (:class:`ObjectLock`), the
  object store's stand-in for a local file lock: taken with a conditional create, held
  for a lease that the holder renews, released with a conditional delete (``If-Match``
  its own version), and taken over with a conditional overwrite once a killed holder's
  lease has run out. So replace, delete and compaction (which rewrite parts) never
  lose a concurrent writer's rows, and appends never leave one key in two parts.
- A folder (a checkpoint written by ``save_pretrained``) is uploaded file by file and
  published by its manifest, written last with :func:`create_once`; a folder without
  its manifest does not exist for readers (:func:`folder_complete`). Readers download a
  published folder into a local cache (:func:`fetch_folder`): published folders never
  change, so a cached copy stays valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from core.paths import PathError, confined, relative_parts

MANIFEST = "_complete.json"  # a published folder's file list; written last
UPLOAD_CHUNK_BYTES = 50 * 2**20  # an object up to twice this size goes up in one PUT
LOCK_LEASE_S = 120.0  # a table lock not renewed for this long is a killed writer's, and may be taken over
LOCK_WAIT_S = 600.0  # how long a writer waits for a table lock before it gives up
log = logging.getLogger(__name__)


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
    files = manifest_files(manifest, f"{protocol}://{root}/{MANIFEST}")
    wanted = {rel: size for rel, size in files.items() if only is None or rel.startswith(only.rstrip("/") + "/")}
    tmp = dest.parent / f".tmp-{uuid.uuid4().hex}"
    try:
        for rel, size in wanted.items():
            target = Path(confined(str(tmp), rel, what=f"file {rel!r} of {protocol}://{root}/{MANIFEST}"))
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


def manifest_files(manifest: Any, where: str) -> dict[str, int]:
    """A manifest's ``{relative path: size}``, every path checked to stay inside the folder (the bucket is data)."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise ValueError(f"{where} holds no 'files' object; the folder was not published by this pipeline, publish it again")
    out = {}
    for rel, size in files.items():
        try:
            norm = relative_parts(rel, what=f"file {rel!r} in {where}")
        except PathError as err:
            raise PathError(f"{err}; nothing of that folder was fetched, publish it again") from None
        if not norm or norm != rel or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PathError(f"{where} lists {rel!r} with size {size!r}, not a plain relative file path and a byte count; "
                            "nothing of that folder was fetched, publish it again")
        out[rel] = size
    return out


def local_folder(location: str) -> str:
    """A folder given as a local path or an fsspec URL (``s3://...``), as a local path (downloaded and cached)."""
    if "://" not in location or location.startswith("file://"):
        return location.removeprefix("file://")
    import fsspec

    fs, root = fsspec.core.url_to_fs(location, use_listings_cache=False)
    return str(fetch_folder(fs, root.rstrip("/")))


# --- the table lock ----------------------------------------------------------------------


class LockLost(RuntimeError):
    """The lease of a lock ran out and another writer took it over: stop before changing anything more."""


def _s3(fs: Any, method: str, path: str, **kwargs: Any) -> dict:
    """One S3 request through s3fs's client; a GetObject's body is read into ``Body`` (bytes)."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)

    async def call() -> dict:
        out = await fs._call_s3(method, Bucket=bucket, Key=key, **kwargs)
        if "Body" in out:
            async with out["Body"] as body:
                out["Body"] = await body.read()
        return out

    return sync(fs.loop, call)


def _precondition_failed(e: BaseException) -> bool:
    cause = e.__cause__ or e
    code = getattr(cause, "response", {}).get("Error", {}).get("Code", "")
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "412") or "pre-condition" in str(e)


class ObjectLock:
    """A lease on the object ``path``: one holder at a time among all processes and nodes that use the store.

    ``check()`` renews the lease when half of it has passed and raises :class:`LockLost` when
    another writer has taken it over, so the holder calls it before each change it makes.
    On stores without conditional overwrite/delete (not S3: ``memory://`` in tests) the
    take-over and the release are plain, which is safe for one process only.
    """

    def __init__(self, fs: Any, path: str, lease_s: float = LOCK_LEASE_S, wait_s: float = LOCK_WAIT_S):
        self.fs, self.path, self.lease_s, self.wait_s = fs, path, lease_s, wait_s
        self.token = uuid.uuid4().hex
        self.version: str | None = None  # the ETag of our lock object
        self.renewed = 0.0

    def _body(self) -> bytes:
        return json.dumps({"holder": f"{socket.gethostname()}:{os.getpid()}", "token": self.token,
                           "expires": time.time() + self.lease_s}).encode()

    def _held(self) -> tuple[dict | None, str | None]:
        """(the lock's content, its version); (None, None) when nobody holds it."""
        try:
            if is_s3(self.fs):
                got = _s3(self.fs, "get_object", self.path)
                data, version = got["Body"], got["ETag"]
            else:
                data, version = self.fs.cat_file(self.path), None
        except FileNotFoundError:
            return None, None
        try:
            return json.loads(data), version
        except ValueError:  # a lock object written by something else: treat it as expired
            return {"expires": 0.0}, version

    def _put(self, if_match: str | None) -> bool:
        """Write our lock object: create it (``if_match`` None) or overwrite the version ``if_match``."""
        body = self._body()
        if is_s3(self.fs):
            condition = {"IfNoneMatch": "*"} if if_match is None else {"IfMatch": if_match}
            try:
                self.version = _s3(self.fs, "put_object", self.path, Body=body, **condition)["ETag"]
            except OSError as e:
                if _precondition_failed(e):
                    return False
                raise
        elif if_match is None:
            if not create_once(self.fs, self.path, body):
                return False
        else:
            self.fs.pipe_file(self.path, body)
        self.renewed = time.monotonic()
        return True

    def acquire(self) -> ObjectLock:
        deadline, delay = time.monotonic() + self.wait_s, 0.01
        while True:
            if self._put(None):
                return self
            held, version = self._held()
            if held is not None and held.get("expires", 0.0) < time.time():
                if self._put(version if is_s3(self.fs) else "any"):
                    log.warning("took over the lock %s from %s, whose lease ran out (a killed writer)", self.path,
                                held.get("holder", "an unknown writer"))
                    return self
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"the table lock {self.path} is held by {(held or {}).get('holder', 'another writer')} and was "
                                   f"not released in {self.wait_s:.0f} s; if that writer is dead, the lock expires "
                                   f"{self.lease_s:.0f} s after it last renewed it")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)

    def check(self) -> None:
        """Renew the lease when half of it has passed; LockLost if another writer holds the lock now."""
        if time.monotonic() - self.renewed < self.lease_s / 2:
            return
        if not self._put(self.version if is_s3(self.fs) else "any"):
            raise LockLost(f"the lock {self.path} was taken over while this writer held it (its lease of "
                           f"{self.lease_s:.0f} s ran out); nothing more is written, run the stage again")

    def release(self) -> None:
        try:
            if is_s3(self.fs):
                _s3(self.fs, "delete_object", self.path, IfMatch=self.version)
            else:
                self.fs.rm_file(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if not _precondition_failed(e):
                raise
            log.warning("the lock %s was taken over before this writer released it (its lease ran out)", self.path)

    def __enter__(self) -> ObjectLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
