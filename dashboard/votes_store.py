"""The live vote store: SQLite in WAL mode inside the workdir.

Every vote is one row, committed (``synchronous=FULL``) before the page thanks the
voter. A vote's id is derived from who voted on what (voter, suite, item, the
unordered checkpoint pair, aspect), so a double click, a resubmitted form or a
second browser tab can never count the same judgement twice: the insert is
``INSERT OR IGNORE`` on the primary key. The same id is also what makes "a voter
never gets the same (item, pair, aspect) twice" hold across sessions.

The store is exported to the ``votes`` Parquet table with :func:`export_votes`
(idempotent: ``Workdir.append`` drops keys already in the table), by the pipeline
and by a button on the Study results page.

Plain module: no Streamlit import, safe to call from the pipeline and from many
processes at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pandas as pd

from core.tables import TABLES, Workdir, now_utc

ASPECTS = ("motion", "quality")
CHOICES = ("left", "right", "tie")
DB_RELPATH = "votes/votes.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    vote_id          TEXT PRIMARY KEY,
    voter            TEXT NOT NULL,
    aspect           TEXT NOT NULL CHECK (aspect IN ('motion', 'quality')),
    suite            TEXT NOT NULL,
    item_id          TEXT NOT NULL,
    left_checkpoint  TEXT NOT NULL,
    right_checkpoint TEXT NOT NULL CHECK (right_checkpoint <> left_checkpoint),
    choice           TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie')),
    winner           TEXT,            -- checkpoint id, NULL for a tie (sides un-randomised)
    left_seed        INTEGER,
    right_seed       INTEGER,
    shown_at         TEXT NOT NULL,   -- ISO 8601, UTC
    voted_at         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS votes_pair ON votes (suite, left_checkpoint, right_checkpoint);
CREATE INDEX IF NOT EXISTS votes_voter ON votes (voter);
"""

_COLUMNS = [
    "vote_id", "voter", "aspect", "suite", "item_id", "left_checkpoint", "right_checkpoint",
    "choice", "winner", "left_seed", "right_seed", "shown_at", "voted_at",
]


class VoteError(ValueError):
    """A vote that must not be stored (unknown aspect or choice, same checkpoint twice)."""


class VoteStoreError(sqlite3.OperationalError):
    """The store could not take the vote (locked too long, disk full); the message says what to do."""


FULL_BELOW_BYTES = 1 << 20  # an I/O error with less free space than this on the store's filesystem is a full disk


def _disk_full(err: sqlite3.Error, path: str) -> bool:
    """Whether ``err`` means the store's disk is full: SQLite says so, or (in WAL mode, growing the
    ``-shm`` file) reports a plain "disk I/O error" while the filesystem has no room left."""
    code = getattr(err, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "disk is full" in str(err):
        return True
    if (code is not None and code & 0xFF == sqlite3.SQLITE_IOERR) or "disk I/O error" in str(err):
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < FULL_BELOW_BYTES
    return False


def vote_id(voter: str, suite: str, item_id: str, checkpoint_a: str, checkpoint_b: str, aspect: str) -> str:
    """Deterministic id of one judgement; the pair is unordered (sides are random)."""
    lo, hi = sorted((checkpoint_a, checkpoint_b))
    payload = "\x1f".join([voter, suite, item_id, lo, hi, aspect])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Vote:
    voter: str
    aspect: str
    suite: str
    item_id: str
    left_checkpoint: str
    right_checkpoint: str
    choice: str
    shown_at: dt.datetime
    voted_at: dt.datetime | None = None
    left_seed: int | None = None
    right_seed: int | None = None

    @property
    def vote_id(self) -> str:
        return vote_id(self.voter, self.suite, self.item_id, self.left_checkpoint, self.right_checkpoint, self.aspect)

    @property
    def winner(self) -> str | None:
        return {"left": self.left_checkpoint, "right": self.right_checkpoint}.get(self.choice)

    def validate(self) -> None:
        if not self.voter:
            raise VoteError("a vote needs a voter")
        if self.aspect not in ASPECTS:
            raise VoteError(f"aspect must be one of {ASPECTS}, got {self.aspect!r}")
        if self.choice not in CHOICES:
            raise VoteError(f"choice must be one of {CHOICES}, got {self.choice!r}")
        if self.left_checkpoint == self.right_checkpoint:
            raise VoteError(f"both sides show checkpoint {self.left_checkpoint!r}; a vote needs two checkpoints")


def _iso(t: dt.datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).isoformat(timespec="microseconds")


def default_db_path(workdir: Workdir | str) -> str:
    """``<workdir>/votes/votes.sqlite`` for a local workdir.

    SQLite needs a local file: for a remote workdir (an fsspec URL) the live store
    goes to ``$DRAGANYTHING_VOTES_DB`` if set, else to a per-workdir file in the
    user's cache directory; export still lands in the workdir's ``votes`` table.
    """
    env = os.environ.get("DRAGANYTHING_VOTES_DB")
    if env:
        return env
    wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    if wd.is_local:
        return wd.local_path(DB_RELPATH)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = hashlib.sha1(wd.url.encode()).hexdigest()[:16]
    return os.path.join(base, "draganything", f"votes-{tag}.sqlite")


class VoteStore:
    """One SQLite file; open a store per process (connections are not shared across forks)."""

    def __init__(self, path: str, timeout_s: float = 15.0):
        self.path = os.fspath(path)
        self.timeout_s = timeout_s
        os.makedirs(os.path.dirname(os.path.abspath(self.path)) or ".", exist_ok=True)
        try:
            with self._connect() as con:
                cols = {r[1] for r in con.execute("PRAGMA table_info(votes)")}
                if "benchmark" in cols:  # a store written before the suites were renamed (ids are unchanged)
                    con.execute("ALTER TABLE votes RENAME COLUMN benchmark TO suite")
                con.executescript(_SCHEMA)
        except sqlite3.OperationalError as err:
            if _disk_full(err, self.path):
                raise VoteStoreError(f"the disk holding the vote store {self.path} is full; free space there, then reload") from None
            raise

    @classmethod
    def for_workdir(cls, workdir: Workdir | str) -> VoteStore:
        return cls(default_db_path(workdir))

    @contextlib.contextmanager
    def _connect(self, timeout_s: float | None = None) -> Iterator[sqlite3.Connection]:
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        con = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        try:
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=FULL")  # a thanked vote survives a power cut
                con.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            except sqlite3.OperationalError as err:
                if _disk_full(err, self.path):
                    raise VoteStoreError(f"the disk holding the vote store {self.path} is full; free space there, then "
                                         "reload (nothing was stored)") from None
                raise
            yield con
        finally:
            con.close()

    # writing -----------------------------------------------------------
    def record(self, votes: Iterable[Vote]) -> list[bool]:
        """Store votes in one transaction; per vote, True if new, False if already stored.

        Returns only after the commit, so a caller that then thanks the voter
        never thanks for a vote that is not on disk.
        """
        votes = list(votes)
        now = now_utc()
        rows = []
        for v in votes:
            v.validate()
            rows.append(
                (
                    v.vote_id, v.voter, v.aspect, v.suite, v.item_id, v.left_checkpoint, v.right_checkpoint,
                    v.choice, v.winner, v.left_seed, v.right_seed, _iso(v.shown_at), _iso(v.voted_at or now),
                )
            )
        if not rows:
            return []
        placeholders = ",".join("?" * len(_COLUMNS))
        sql = f"INSERT OR IGNORE INTO votes ({','.join(_COLUMNS)}) VALUES ({placeholders})"
        deadline = time.monotonic() + self.timeout_s  # the whole call, retries included, waits at most this long
        attempt = 0
        while True:
            try:
                with self._connect(max(0.05, deadline - time.monotonic())) as con:
                    con.execute("BEGIN IMMEDIATE")
                    try:
                        new = [con.execute(sql, r).rowcount == 1 for r in rows]
                        con.execute("COMMIT")
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error):  # a failed statement may have ended it already
                            con.execute("ROLLBACK")
                        raise
                return new
            except sqlite3.OperationalError as err:
                if _disk_full(err, self.path):
                    raise VoteStoreError(
                        f"the disk holding the vote store {self.path} is full; free space there, then submit again "
                        "(the vote was NOT stored)"
                    ) from None
                if ("locked" not in str(err) and "busy" not in str(err)) or time.monotonic() >= deadline:
                    if "locked" in str(err) or "busy" in str(err):
                        raise VoteStoreError(
                            f"the vote store {self.path} stayed locked by another writer for {self.timeout_s:g} s; "
                            "submit again in a moment (the vote was NOT stored)"
                        ) from None
                    raise
                time.sleep(min(0.05 * 2**attempt, 1.0, max(0.0, deadline - time.monotonic())))
                attempt += 1

    # reading -----------------------------------------------------------
    def frame(self, suite: str | None = None, voter: str | None = None) -> pd.DataFrame:
        """All votes (optionally of one suite / voter) with UTC timestamps."""
        where, args = [], []
        if suite is not None:
            where.append("suite = ?")
            args.append(suite)
        if voter is not None:
            where.append("voter = ?")
            args.append(voter)
        sql = f"SELECT {','.join(_COLUMNS)} FROM votes" + (f" WHERE {' AND '.join(where)}" if where else "")
        with self._connect() as con:
            df = pd.read_sql_query(sql, con, params=args)
        for c in ("shown_at", "voted_at"):
            df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
        for c in ("left_seed", "right_seed"):
            df[c] = df[c].astype("Int64")
        return df

    def count(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM votes").fetchone()[0])

    def pair_counts(self, suite: str) -> dict[tuple[str, str], int]:
        """Judgements per unordered pair on a suite (one per (voter, item), aspects folded)."""
        sql = """
            SELECT MIN(left_checkpoint, right_checkpoint) AS a, MAX(left_checkpoint, right_checkpoint) AS b,
                   COUNT(DISTINCT voter || char(31) || item_id) AS n
            FROM votes WHERE suite = ? GROUP BY a, b
        """
        with self._connect() as con:
            return {(a, b): int(n) for a, b, n in con.execute(sql, (suite,))}

    def done_by(self, voter: str, suite: str) -> set[tuple[str, str, str, str]]:
        """(item_id, checkpoint_a, checkpoint_b, aspect) the voter has judged, pair sorted."""
        sql = """
            SELECT item_id, MIN(left_checkpoint, right_checkpoint), MAX(left_checkpoint, right_checkpoint), aspect
            FROM votes WHERE voter = ? AND suite = ?
        """
        with self._connect() as con:
            return {tuple(r) for r in con.execute(sql, (voter, suite))}  # type: ignore[misc]

    def data_version(self) -> tuple[int, float]:
        """(row count, file mtime): a cheap cache key for readers."""
        wal = self.path + "-wal"
        m = max((os.path.getmtime(p) for p in (self.path, wal) if os.path.exists(p)), default=0.0)
        return self.count(), m


def to_table_rows(df: pd.DataFrame) -> list[dict]:
    """SQLite rows -> rows of the ``votes`` Parquet table (its columns only)."""
    cols = TABLES["votes"].schema.names
    out = []
    for r in df.to_dict("records"):
        row = {c: r.get(c) for c in cols}
        for c in ("shown_at", "voted_at"):
            row[c] = pd.Timestamp(row[c]).to_pydatetime()
        out.append(row)
    return out


def export_votes(workdir: Workdir | str, store: VoteStore | None = None) -> int:
    """Copy the live store into the ``votes`` Parquet table; returns rows newly written.

    Idempotent: votes already exported are skipped (the table is keyed on vote_id).
    """
    wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    store = store or VoteStore.for_workdir(wd)
    df = store.frame()
    if df.empty:
        return 0
    have = {k[0] for k in wd.keys("votes")}
    df = df[~df["vote_id"].isin(have)]
    if df.empty:
        return 0
    return wd.append("votes", to_table_rows(df))


def all_votes(workdir: Workdir | str, store: VoteStore | None = None) -> pd.DataFrame:
    """Live votes plus any in the Parquet table that the live store lacks (e.g. from another host).

    Parquet-only rows get suite = NaN (the table has no suite column).
    """
    wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    store = store or VoteStore.for_workdir(wd)
    live = store.frame()
    table = wd.read("votes")
    if not table.empty:
        extra = table[~table["vote_id"].isin(live["vote_id"])]
        if not extra.empty:
            extra = extra.assign(suite=pd.NA)
            live = extra if live.empty else pd.concat([live, extra], ignore_index=True)
    return live

