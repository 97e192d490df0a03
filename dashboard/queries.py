"""Reading the workdir's tables for the pages, cached on each table's modification time.

Tables are read with pyarrow (column projection and filter pushdown through
``Workdir.read_arrow``, so a remote fsspec workdir works too). Each read is cached
with ``st.cache_data`` under a key that includes the table's version (newest part
mtime, number of parts, total size): a stage that appends or rewrites a part
changes the key, so the pages show new rows on the next rerun without any TTL.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import streamlit as st

from core.tables import TABLES, Workdir
from dashboard.votes_store import VoteStore, all_votes, default_db_path

ENV_WORKDIR = "DRAGANYTHING_WORKDIR"

Filter = tuple[str, str, Any]  # (column, "==" | "in", value)


def workdir_url() -> str | None:
    """The workdir: ``-- --workdir W`` after ``streamlit run``, else $DRAGANYTHING_WORKDIR."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workdir")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.workdir or os.environ.get(ENV_WORKDIR) or None


@st.cache_resource(show_spinner=False)
def get_workdir(url: str) -> Workdir:
    return Workdir(url)


def table_version(wd: Workdir, table: str) -> tuple[float, int, int]:
    """(newest part mtime, parts, bytes): changes whenever a part is added, replaced or removed."""
    d = wd.table_dir(table)
    try:
        entries = wd.fs.ls(d, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return (0.0, 0, 0)
    newest, n, size = 0.0, 0, 0
    for e in entries:
        name = os.path.basename(e["name"])
        if not name.endswith(".parquet") or name.startswith((".", "_")):
            continue
        n += 1
        size += int(e.get("size") or 0)
        m = e.get("mtime") or e.get("LastModified") or e.get("last_modified")
        if m is None:
            m = wd.fs.modified(e["name"])
        newest = max(newest, m.timestamp() if hasattr(m, "timestamp") else float(m))
    return (newest, n, size)


def _expression(filters: Sequence[Filter] | None):
    expr = None
    for col, op, value in filters or ():
        field = pc.field(col)
        if op == "==":
            e = field == value
        elif op == "in":
            e = field.isin(list(value))
        else:
            raise ValueError(f"unsupported filter op {op!r}")
        expr = e if expr is None else expr & e
    return expr


@st.cache_data(show_spinner=False, max_entries=256)
def _read_cached(url: str, table: str, version: tuple, columns: tuple[str, ...] | None, filters: tuple | None) -> pd.DataFrame:
    del version  # part of the cache key only
    wd = get_workdir(url)
    return wd.read(table, columns=list(columns) if columns else None, filter=_expression(filters))


def read(url: str, table: str, columns: Sequence[str] | None = None, filters: Sequence[Filter] | None = None) -> pd.DataFrame:
    """A table (optionally some columns / rows), cached until the table changes."""
    if table not in TABLES:
        raise KeyError(f"unknown table {table!r}")
    wd = get_workdir(url)
    version = table_version(wd, table)
    if version[1] == 0:
        spec = TABLES[table].schema
        cols = list(columns) if columns else spec.names
        return spec.empty_table().select(cols).to_pandas()
    frozen = tuple((c, op, tuple(v) if op == "in" else v) for c, op, v in filters or ())
    return _read_cached(url, table, version, tuple(columns) if columns else None, frozen or None)


# --------------------------------------------------------------------- votes


def vote_store(url: str) -> VoteStore:
    return _vote_store(default_db_path(get_workdir(url)))


@st.cache_resource(show_spinner=False)
def _vote_store(path: str) -> VoteStore:
    return VoteStore(path)


def votes_version(url: str) -> tuple:
    store = vote_store(url)
    return (store.data_version(), table_version(get_workdir(url), "votes"))


@st.cache_data(show_spinner=False, max_entries=16)
def _all_votes_cached(url: str, version: tuple) -> pd.DataFrame:
    del version
    return all_votes(get_workdir(url), vote_store(url))


def votes(url: str) -> pd.DataFrame:
    """Every vote: the live SQLite store plus Parquet-only rows (cached on both versions)."""
    return _all_votes_cached(url, votes_version(url))


@st.cache_data(show_spinner=False, max_entries=32)
def _ratings_cached(url: str, version: tuple, suite: str | None, n_boot: int, unit: str = "cases") -> pd.DataFrame:
    from eval.votes import bradley_terry, bradley_terry_bootstrap

    v = _all_votes_cached(url, version)
    if suite is not None and "suite" in v.columns:
        v = v[v["suite"].isna() | (v["suite"] == suite)]
    frames = []
    for aspect in ("motion", "quality"):
        if n_boot > 0:
            r = bradley_terry_bootstrap(v, aspect=aspect, n_boot=n_boot, unit=unit)
        else:
            r = bradley_terry(v, aspect=aspect)
            r = r.assign(ci_low=float("nan"), ci_high=float("nan"))
        if not r.empty:
            frames.append(r.assign(aspect=aspect))
    if not frames:
        return pd.DataFrame(columns=["checkpoint_id", "rating", "strength", "n", "wins", "ci_low", "ci_high", "aspect"])
    return pd.concat(frames, ignore_index=True)


def ratings(url: str, suite: str | None = None, n_boot: int = 0, unit: str = "cases") -> pd.DataFrame:
    """Bradley-Terry ratings per aspect (cached until a vote arrives).

    ``n_boot = 0``: point estimates only (the leaderboard: milliseconds even for
    hundreds of checkpoints); otherwise with percentile bootstrap intervals that
    resample ``unit`` (cases, voters or votes: ``eval.votes``).
    """
    return _ratings_cached(url, votes_version(url), suite, int(n_boot), unit)
