"""One confinement rule for every path the pipeline opens from data or from a table.

A path that comes from a split file, a table row or a case file is *relative* to a
root (the workdir, the data root, a case folder). :func:`confined` resolves it and
refuses anything that would leave that root: absolute paths, drive letters, URLs,
``..`` segments, NUL bytes and (on a local filesystem) symlinks that point out.
"""

from __future__ import annotations

import os
import posixpath

NAME_MAX = 255  # bytes in one path component on the filesystems we run on


class PathError(ValueError):
    """A relative path that would leave its root, or cannot be a path at all."""


def relative_parts(*parts: str, what: str = "path") -> str:
    """Join relative parts into one normalised POSIX path inside the root ('' = the root itself)."""
    pieces = []
    for p in parts:
        if not isinstance(p, str):
            raise PathError(f"{what} {p!r} is not a string; refusing to open it")
        if "\x00" in p:
            raise PathError(f"{what} {p!r} holds a NUL byte; refusing to open it")
        text = p.replace("\\", "/")
        if text.startswith("/") or "://" in text or (len(text) > 1 and text[1] == ":" and text[0].isalpha()):
            raise PathError(f"{what} {p!r} is not relative; refusing to open it")
        pieces.append(text)
    joined = "/".join(x for x in pieces if x)
    if not joined:
        return ""
    norm = posixpath.normpath(joined)
    if norm == ".":
        return ""
    if norm == ".." or norm.startswith("../"):
        raise PathError(f"{what} {'/'.join(parts)!r} leaves its folder; refusing to open it")
    return norm


def inside_local(root: str, full: str, what: str = "path") -> str:
    """``full`` with symlinks resolved, if it stays under ``root`` (also resolved); else PathError."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(full)
    if real != real_root and os.path.commonpath([real_root, real]) != real_root:
        raise PathError(f"{what} {full!r} resolves outside {root} (a symlink?); refusing to open it")
    return real


def confined(root: str, *parts: str, local: bool = True, what: str = "path") -> str:
    """The path of ``parts`` under ``root``, refusing to leave it (symlinks checked on a local root)."""
    rel = relative_parts(*parts, what=what)
    full = f"{root.rstrip('/')}/{rel}" if rel else root.rstrip("/")
    if local:
        inside_local(root, full, what)
    return full


def fits_name(name: str) -> bool:
    """Whether ``name`` fits in one path component (NAME_MAX bytes)."""
    return len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX


def printable(text: str) -> str:
    """``text`` safe to store and show: bytes that were not UTF-8 (surrogate-escaped) as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8(text: str) -> bool:
    """Whether ``text`` holds no surrogate-escaped byte (a file name that was not UTF-8 on disk)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_name(stem: str, suffix: str = "") -> str:
    """``stem + suffix`` as one path component: a stem too long for NAME_MAX is cut and given its digest.

    Every place where a name from data (a video id, an item id) becomes a file uses this,
    so a 251-byte video name that was fine as a folder never fails as ``<name>.npz``.
    """
    import hashlib

    name = f"{stem}{suffix}"
    if fits_name(name):
        return name
    raw = stem.encode("utf-8", "surrogateescape")
    return f"{raw[:120].decode('utf-8', 'ignore')}-{hashlib.sha1(raw).hexdigest()[:16]}{suffix}"


def single_name(text: str, what: str) -> str:
    """``text`` if it is one plain folder name (no separator, no ``..``, UTF-8, fits NAME_MAX); else PathError."""
    try:
        rel = relative_parts(text, what=what)
    except PathError:
        rel = None
    if not rel or "/" in rel or rel != text or not is_utf8(text) or not fits_name(text):
        raise PathError(f"{what} {printable(text)!r} is not a single folder name; give a plain name such as 'vipseg'")
    return text
