"""Load: 20 voter processes x 50 votes at once through the vote-writing code -> exactly 1,000 rows."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import time

VOTERS, PER_VOTER, RESUBMITS = 20, 50, 10


def _voter(path: str, k: int, barrier, out) -> None:
    from dashboard.votes_store import Vote, VoteStore

    store = VoteStore(path)
    shown = dt.datetime.now(dt.UTC)
    votes = [
        Vote(
            voter=f"voter{k:02d}", aspect=("motion", "quality")[i % 2], suite="vipseg-val", item_id=f"item{i // 2:03d}",
            left_checkpoint="ck-a", right_checkpoint=f"ck-{'bcd'[i % 3]}",
            choice=("left", "right", "tie")[i % 3], shown_at=shown,
        )
        for i in range(PER_VOTER)
    ]
    barrier.wait()
    new = 0
    for v in votes:  # one form submission per vote, as fast as a process can go
        new += sum(store.record([v]))
    for v in votes[:RESUBMITS]:  # double clicks
        new += sum(store.record([v]))
    out.put((k, new))


def test_concurrent_voters_lose_and_duplicate_nothing(tmp_path, record_property, capsys):
    from dashboard.votes_store import VoteStore

    path = str(tmp_path / "votes.sqlite")
    VoteStore(path)  # create the schema once, like the app does at start
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    barrier = ctx.Barrier(VOTERS + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=_voter, args=(path, k, barrier, out)) for k in range(VOTERS)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    results = [out.get(timeout=120) for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    store = VoteStore(path)
    df = store.frame()
    assert len(df) == VOTERS * PER_VOTER == 1000
    assert df["vote_id"].is_unique
    assert sum(n for _, n in results) == 1000  # every resubmission was recognised as a duplicate
    assert df.groupby("voter").size().eq(PER_VOTER).all()
    rate = 1000 / elapsed
    record_property("votes_per_s", round(rate, 1))
    with capsys.disabled():
        print(f"\n[load] {VOTERS} voters x {PER_VOTER} votes (+{RESUBMITS} resubmits each): 1000 rows in {elapsed:.2f} s = {rate:.0f} votes/s")
