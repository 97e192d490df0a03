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
