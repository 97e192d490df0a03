"""Dashboard benchmark: leaderboard render time at scale, and vote-store throughput.

    .venv/bin/python benchmarks/dashboard.py [--checkpoints 200] [--suites 3] [--items 1000] [--votes 5000]

Builds a workdir with C checkpoints x S evaluation suites x N items in the tables
(samples and objmc: C*B*N rows each; metrics: ObjMC/FID on two backbones/FVD per
checkpoint and benchmark; train_log; labels), all written through
``Workdir.append``, plus V votes in the live SQLite store. Then renders the
Leaderboard page with Streamlit's AppTest:

* ``first``: first render in the process (Streamlit and page imports included),
* ``cold``: a fresh session with empty caches (the render a new visitor gets
  after the tables changed),
* ``warm``: the same session re-run (cached tables, what every interaction costs).

Goal (issue 7): under 2 s. Prints a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "dashboard"))  # the filled workdir the dashboard's tests use


def build(root: str, checkpoints: int, suites: int, items: int, votes: int) -> dict:
    from filled_workdir import fill_workdir

    from dashboard.votes_store import Vote, VoteStore, default_db_path

    t0 = time.perf_counter()
    names = tuple(["vipseg-val", "sample-val", "davis-val", "kinetics-val"][:suites] + [f"suite-{i}" for i in range(max(0, suites - 4))])
    summary = fill_workdir(root, n_checkpoints=checkpoints, suites=names, n_items=items, videos=False, log_steps=50, entities=1)
    store = VoteStore(default_db_path(root))
    rng = random.Random(0)
    cks = summary["checkpoints"]
    shown = dt.datetime.now(dt.UTC)
    batch = []
    for i in range(votes):
        a, b = rng.sample(cks, 2)
        batch.append(Vote(f"voter{i % 30}", ("motion", "quality")[i % 2], sorted(names)[0], f"sample_{(i // 2) % items:04d}", a, b,
                          rng.choice(["left", "right", "tie"]), shown_at=shown))
    for k in range(0, len(batch), 500):
        store.record(batch[k : k + 500])
    return {"build_s": time.perf_counter() - t0, "votes_stored": store.count()}


def render(root: str, repeats: int = 3) -> dict:
    from streamlit.testing.v1 import AppTest

    os.environ["DRAGANYTHING_WORKDIR"] = root
    app = str(ROOT / "dashboard" / "app.py")

    def run(at):
        t = time.perf_counter()
        at.run(timeout=300)
        dt_ = time.perf_counter() - t
        assert not at.exception, [e.message for e in at.exception]
        return dt_, at

    first, at = run(AppTest.from_file(app, default_timeout=300))
    table = at.dataframe[0].value
    rows = len(table)
    assert "human motion (BT)" in table.columns, "votes did not reach the leaderboard"
    warm = [run(at)[0] for _ in range(repeats)]
    cold = []
    for _ in range(repeats):
        import streamlit as st

        st.cache_data.clear()
        st.cache_resource.clear()
        cold.append(run(AppTest.from_file(app, default_timeout=300))[0])
    return {"first_s": first, "cold_s": statistics.median(cold), "warm_s": statistics.median(warm), "rows": rows}


def other_pages(root: str) -> dict:
    """First and repeated render of the other pages at the same scale (a signed-in voter for Vote)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["DRAGANYTHING_WORKDIR"] = root
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300)
    at.secrets["voters"] = {"bench": "tok"}
    at.session_state["voter_identity"] = {"voter": "bench", "digest": __import__("hashlib").sha256(b"tok").hexdigest()}
    at.run(timeout=300)
    out = {}
    for page in ("compare", "training", "vote", "results"):
        at.switch_page(f"views/{page}.py")
        times = []
        for _ in range(2):
            t = time.perf_counter()
            at.run(timeout=300)
            times.append(time.perf_counter() - t)
            assert not at.exception, (page, [e.message for e in at.exception])
        out[page] = {"first_s": times[0], "again_s": times[1]}
    return out


def load(voters: int = 20, per_voter: int = 50) -> dict:
    """The issue's load test (20 processes x 50 votes) on a fresh store: votes/s."""
    import multiprocessing as mp

    from dashboard.votes_store import VoteStore

    d = tempfile.mkdtemp(prefix="votes-load-")
    path = os.path.join(d, "votes.sqlite")
    VoteStore(path)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    barrier = ctx.Barrier(voters + 1)

    procs = [ctx.Process(target=_load_worker, args=(path, k, per_voter, barrier)) for k in range(voters)]
    for p in procs:
        p.start()
    barrier.wait()
    t = time.perf_counter()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t
    n = VoteStore(path).count()
    return {"voters": voters, "per_voter": per_voter, "rows": n, "seconds": elapsed, "votes_per_s": n / elapsed}


def _load_worker(path: str, k: int, per_voter: int, barrier) -> None:
    from dashboard.votes_store import Vote, VoteStore

    store = VoteStore(path)
    shown = dt.datetime.now(dt.UTC)
    votes = [Vote(f"v{k}", ("motion", "quality")[i % 2], "bm", f"item{i // 2}", "ck-a", f"ck-{'bcd'[i % 3]}", "left", shown_at=shown) for i in range(per_voter)]
    barrier.wait()
    for v in votes:
        store.record([v])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoints", type=int, default=200)
    ap.add_argument("--suites", type=int, default=3)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--votes", type=int, default=5000)
    ap.add_argument("--workdir", help="reuse/keep this workdir (built if it has no tables)")
    args = ap.parse_args()

    root = args.workdir or tempfile.mkdtemp(prefix="dash-bench-")
    out: dict = {"checkpoints": args.checkpoints, "suites": args.suites, "items": args.items, "votes": args.votes}
    if not Path(root, "tables", "metrics").exists():
        out.update(build(root, args.checkpoints, args.suites, args.items, args.votes))
    from core.tables import Workdir

    wd = Workdir(root)
    out["table_rows"] = {t: int(wd.read_arrow(t, columns=[c]).num_rows) for t, c in (("samples", "item_id"), ("objmc", "item_id"), ("metrics", "metric"), ("train_log", "step"))}
    out.update(render(root))
    out["pages"] = other_pages(root)
    out["load"] = load()
    print(f"workdir: {root}")
    print(f"tables: {out['table_rows']}")
    print(f"leaderboard render: first {out['first_s']:.2f} s (imports included), cold cache {out['cold_s']:.2f} s, warm {out['warm_s']:.2f} s; goal < 2 s")
    for page, t in out["pages"].items():
        print(f"{page}: first {t['first_s']:.2f} s, again {t['again_s']:.2f} s")
    ld = out["load"]
    print(f"vote store: {ld['voters']} processes x {ld['per_voter']} votes -> {ld['rows']} rows in {ld['seconds']:.2f} s = {ld['votes_per_s']:.0f} votes/s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
