"""Voting through the form: stored un-randomised, idempotent, only for known voters; export."""

from __future__ import annotations

import datetime as dt
import os
import random

import pandas as pd
import pytest

from core.tables import Workdir
from dashboard.scheduling import Assignment, next_assignment
from dashboard.votes_store import Vote, VoteError, VoteStore, default_db_path, export_votes, vote_id


def sign_in(at, token: str):
    at.text_input(key="auth_token_input").input(token).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def store_of(workdir) -> VoteStore:
    return VoteStore(default_db_path(str(workdir)))


def answer(at, motion: str, quality: str):
    at.radio(key="vote_motion").set_value(motion)
    at.radio(key="vote_quality").set_value(quality)
    next(b for b in at.button if b.label == "Submit vote").click().run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_vote_lands_in_sqlite_with_sides_unrandomised(make_app, open_page, page_text, filled_workdir):
    at = sign_in(open_page(make_app(filled_workdir), "vote"), "tok-alice")
    a: Assignment = at.session_state["vote_assignment"]
    assert {a.left_checkpoint, a.right_checkpoint} <= {"ck-000", "ck-001", "ck-002"}
    player = at.get("iframe")  # the synced pair: both videos inline, one size
    assert len(player) == 1 and player[0].proto.srcdoc.count("<video") == 2
    # The page never names the checkpoints it shows.
    assert a.left_checkpoint not in page_text(at) and a.right_checkpoint not in page_text(at)

    answer(at, "A (left)", "B (right)")
    assert "Thanks, your vote is saved" in page_text(at)
    rows = store_of(filled_workdir).frame().set_index("aspect")
    assert len(rows) == 2
    assert rows.loc["motion", "voter"] == "alice"
    assert rows.loc["motion", "left_checkpoint"] == a.left_checkpoint
    assert rows.loc["motion", "right_checkpoint"] == a.right_checkpoint
    assert rows.loc["motion", "choice"] == "left" and rows.loc["motion", "winner"] == a.left_checkpoint
    assert rows.loc["quality", "choice"] == "right" and rows.loc["quality", "winner"] == a.right_checkpoint
    assert rows.loc["motion", "item_id"] == a.item_id and rows.loc["motion", "suite"] == "vipseg-val"
    # The next screen is a different judgement.
    b: Assignment = at.session_state["vote_assignment"]
    assert (b.item_id, b.pair) != (a.item_id, a.pair)


def test_resubmission_is_counted_once(make_app, open_page, page_text, filled_workdir):
    at = sign_in(open_page(make_app(filled_workdir), "vote"), "tok-bob")
    a = at.session_state["vote_assignment"]
    answer(at, "Tie / can't tell", "A (left)")
    # The same screen submitted again (double click / a second tab / browser back).
    at.session_state["vote_assignment"] = a
    at.run()
    answer(at, "Tie / can't tell", "A (left)")
    assert "counted once" in page_text(at)
    df = store_of(filled_workdir).frame()
    assert len(df) == 2 and df["vote_id"].is_unique
    assert set(df["voter"]) == {"bob"}


def test_unanswered_question_stores_nothing(make_app, open_page, page_text, filled_workdir):
    at = sign_in(open_page(make_app(filled_workdir), "vote"), "tok-alice")
    at.radio(key="vote_motion").set_value("A (left)")
    next(b for b in at.button if b.label == "Submit vote").click().run()
    assert "Please answer" in page_text(at)
    assert store_of(filled_workdir).count() == 0


def test_unknown_voter_cannot_vote(make_app, open_page, page_text, filled_workdir):
    at = sign_in(open_page(make_app(filled_workdir), "vote"), "not-a-token")
    assert any("Unknown voter token" in e.value for e in at.error)
    assert not at.radio and not [b for b in at.button if b.label == "Submit vote"]
    assert "vote_assignment" not in at.session_state
    assert store_of(filled_workdir).count() == 0
    # ...but can read the leaderboard.
    at.switch_page("views/leaderboard.py").run()
    assert at.dataframe and not at.exception


def test_no_voters_configured_means_nobody_votes(make_app, open_page, page_text, filled_workdir):
    at = open_page(make_app(filled_workdir, voters=None), "vote")
    assert "Voting is not set up" in page_text(at)
    assert not at.radio


def test_oidc_signed_in_user_votes_under_email(make_app, open_page, page_text, filled_workdir):
    at = make_app(filled_workdir, voters=None, secrets={"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x"}})
    at.user = {"is_logged_in": True, "email": "carol@lab.org", "email_verified": True}
    open_page(at, "vote")
    answer(at, "B (right)", "B (right)")
    assert set(store_of(filled_workdir).frame()["voter"]) == {"carol@lab.org"}


def test_oidc_allowlist_turns_others_into_readers(make_app, open_page, page_text, filled_workdir):
    secrets = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x"}, "dashboard": {"allowed_domains": ["lab.org"]}}
    at = make_app(filled_workdir, voters=None, secrets=secrets)
    at.user = {"is_logged_in": True, "email": "mallory@elsewhere.com", "email_verified": True}
    open_page(at, "vote")
    assert "not on this study's voter list" in page_text(at)
    assert not at.radio
    at2 = make_app(filled_workdir, voters=None, secrets=secrets)
    at2.user = {"is_logged_in": False}
    open_page(at2, "vote")
    assert "Sign in" in page_text(at2) and not at2.radio


def test_results_and_export_after_votes(make_app, open_page, page_text, filled_workdir):
    at = sign_in(open_page(make_app(filled_workdir), "vote"), "tok-alice")
    for _ in range(3):
        answer(at, "A (left)", "Tie / can't tell")
    at.switch_page("views/results.py").run()
    assert not at.exception, [e.message for e in at.exception]
    rates = next(d.value for d in at.dataframe if "wins_a" in d.value.columns)
    assert set(rates["aspect"]) == {"motion", "quality"} and rates["n"].sum() == 6
    export = next(b for b in at.button if b.label.startswith("Export votes"))
    export.click().run()
    assert any("6 new vote(s)" in s.value for s in at.success)
    table = Workdir(str(filled_workdir)).read("votes")
    assert len(table) == 6 and table["vote_id"].is_unique
    next(b for b in at.button if b.label.startswith("Export votes")).click().run()
    assert any("0 new vote(s)" in s.value for s in at.success)
    assert len(Workdir(str(filled_workdir)).read("votes")) == 6
    # the leaderboard now shows human ratings next to the metrics
    at.switch_page("views/leaderboard.py").run()
    assert "human motion (BT)" in at.dataframe[0].value.columns


# ------------------------------------------------------------------ store level


def _vote(i: int, voter: str = "v", choice: str = "left") -> Vote:
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return Vote(voter, "motion", "bm", f"item{i}", "ck-a", "ck-b", choice, shown_at=t)


def test_store_is_idempotent_and_validates(tmp_path):
    s = VoteStore(str(tmp_path / "v.sqlite"))
    assert s.record([_vote(1), _vote(2)]) == [True, True]
    assert s.record([_vote(1)]) == [False]
    # the same judgement with sides swapped is the same vote
    swapped = Vote("v", "motion", "bm", "item1", "ck-b", "ck-a", "right", shown_at=_vote(1).shown_at)
    assert s.record([swapped]) == [False]
    assert s.count() == 2
    with pytest.raises(VoteError):
        s.record([Vote("v", "motion", "bm", "i", "ck-a", "ck-a", "left", shown_at=_vote(1).shown_at)])
    with pytest.raises(VoteError):
        s.record([_vote(3, choice="both")])
    with open(s.path, "rb"):
        pass
    con = __import__("sqlite3").connect(s.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert vote_id("v", "bm", "item1", "ck-a", "ck-b", "motion") == vote_id("v", "bm", "item1", "ck-b", "ck-a", "motion")


def test_a_store_from_before_the_suites_rename_opens_with_its_votes(tmp_path):
    import sqlite3

    path = str(tmp_path / "old.sqlite")
    VoteStore(path).record([_vote(1), _vote(2)])
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE votes RENAME COLUMN suite TO benchmark")  # the column's name until this release
    con.commit()
    con.close()
    s = VoteStore(path)
    assert s.count() == 2 and set(s.frame(suite="bm")["item_id"]) == {"item1", "item2"}
    assert s.record([_vote(1)]) == [False]  # same ids as before
    assert s.pair_counts("bm") and s.done_by("v", "bm")


def test_export_round_trip(tmp_path):
    wd = Workdir(str(tmp_path / "wd"))
    s = VoteStore.for_workdir(wd)
    assert s.path == os.path.join(wd.root, "votes", "votes.sqlite")
    s.record([_vote(i) for i in range(5)])
    assert export_votes(wd, s) == 5
    assert export_votes(wd, s) == 0
    t = wd.read("votes")
    assert list(t.columns) == ["vote_id", "voter", "aspect", "item_id", "left_checkpoint", "right_checkpoint", "choice", "shown_at", "voted_at"]
    assert str(t["voted_at"].dt.tz) == "UTC"


# ------------------------------------------------------------------ scheduling


def _samples(cks, items):
    return pd.DataFrame(
        [dict(checkpoint_id=c, item_id=i, seed=0, video_path=f"samples/{c}/{i}.mp4") for c in cks for i in items]
    )


def test_scheduler_covers_pairs_evenly_and_never_repeats():
    cks, items = ["a", "b", "c", "d"], [f"i{k}" for k in range(5)]
    samples = _samples(cks, items)
    rng = random.Random(0)
    counts: dict = {}
    done: dict[str, set] = {"x": set(), "y": set(), "z": set()}
    seen: dict[str, set] = {v: set() for v in done}
    lefts = {"a": 0}
    for step in range(36):  # 3 voters x 12 screens
        voter = "xyz"[step % 3]
        a = next_assignment("bm", samples, counts, done[voter], rng=rng)
        assert a is not None
        key = (a.item_id, a.pair)
        assert key not in seen[voter], "a voter got the same (item, pair) twice"
        seen[voter].add(key)
        counts[a.pair] = counts.get(a.pair, 0) + 1
        for asp in a.aspects:
            done[voter].add((a.item_id, *a.pair, asp))
        if "a" in a.pair:
            lefts["a"] += a.left_checkpoint == "a"
        # evenness: after every screen, pair counts differ by at most one
        full = [counts.get(p, 0) for p in [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]]
        assert max(full) - min(full) <= 1
    assert 0 < lefts["a"] < sum(counts[p] for p in counts if "a" in p)  # sides are shuffled


def test_scheduler_asks_only_missing_aspects_and_stops_when_done():
    samples = _samples(["a", "b"], ["i0"])
    done = {("i0", "a", "b", "motion")}
    a = next_assignment("bm", samples, {}, done, rng=random.Random(1))
    assert a.aspects == ("quality",)
    done.add(("i0", "a", "b", "quality"))
    assert next_assignment("bm", samples, {}, done) is None
    assert next_assignment("bm", _samples(["a"], ["i0"]), {}, set()) is None


def test_scheduler_prefers_pairs_with_few_votes():
    samples = _samples(["a", "b", "c"], ["i0", "i1"])
    counts = {("a", "b"): 5, ("a", "c"): 5, ("b", "c"): 1}
    for s in range(10):
        assert next_assignment("bm", samples, counts, set(), rng=random.Random(s)).pair == ("b", "c")


def test_voters_add_stores_only_a_digest_keeps_the_file_and_rotates(tmp_path):
    import stat
    import tomllib

    from dashboard.auth import add_voter, check_token

    path = tmp_path / "demo" / "secrets.toml"
    path.parent.mkdir()
    path.write_text('[auth]\nredirect_uri = "http://localhost:8501/oauth2callback"\n\n[voters]\nbob = "tok-bob"\n')
    first = add_voter(path, "demo")
    assert first not in path.read_text() and stat.S_IMODE(path.stat().st_mode) == 0o600
    conf = tomllib.loads(path.read_text())
    assert conf["auth"]["redirect_uri"].startswith("http://localhost")
    assert check_token(conf["voters"], first) == "demo" and check_token(conf["voters"], "tok-bob") == "bob"
    second = add_voter(path, "demo")  # a new token; the old one stops working
    voters = tomllib.loads(path.read_text())["voters"]
    assert second != first and check_token(voters, second) == "demo" and check_token(voters, first) is None
    assert list(voters) == ["bob", "demo"]
    with pytest.raises(ValueError, match="voter name"):
        add_voter(path, 'x" = 1\n[auth]')


def test_a_token_from_voters_add_signs_in_on_the_vote_page(make_app, open_page, page_text, filled_workdir, tmp_path):
    import subprocess
    import sys
    import tomllib

    secrets = tmp_path / "secrets.toml"
    token = subprocess.run([sys.executable, "-m", "flows.cli", "voters", "add", "--secrets", str(secrets), "--name", "demo"],
                           capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    at = make_app(filled_workdir, voters=None, secrets=tomllib.loads(secrets.read_text()))
    at = sign_in(open_page(at, "vote"), token)
    assert "Voting as **demo**" in page_text(at)
    assert at.session_state["vote_assignment"] is not None


def test_the_default_pool_never_offers_a_reference_or_control_off(make_app, open_page, study_workdir):
    """50 draws with the page's pool and scheduler offer trained checkpoints only; the page draws from that
    pool, and its toggle opts references and control-off in."""
    from dashboard.scheduling import study_pool

    wd = Workdir(str(study_workdir))
    samples = wd.read("samples")
    samples = samples[samples["suite"] == "vipseg-val"]
    pool = study_pool(wd.read("checkpoints"), samples, None, False)
    assert sorted(pool) == ["ck-000", "ck-001", "ck-002", "ck-003"]
    rng, offered = random.Random(0), set()
    for _ in range(50):
        a = next_assignment("vipseg-val", samples, {}, set(), rng=rng, checkpoints=pool)
        offered |= {a.left_checkpoint, a.right_checkpoint}
    assert offered == set(pool)
    everything = study_pool(wd.read("checkpoints"), samples, None, True)
    assert {"warp", "ck-002~nocontrol"} <= set(everything)

    at = sign_in(open_page(make_app(study_workdir), "vote"), "tok-alice")
    assert set(at.session_state["vote_assignment"].pair) <= set(pool)
    at.toggle(key="vote_include_others").set_value(True).run()
    assert "sanity check" in " ".join(c.value for c in at.caption)
    assert not at.exception


def test_the_reveal_names_both_sides_after_a_vote(make_app, open_page, page_text, study_workdir):
    at = sign_in(open_page(make_app(study_workdir), "vote"), "tok-alice")
    a: Assignment = at.session_state["vote_assignment"]
    assert "revealed" not in page_text(at)
    answer(at, "A (left)", "Tie / can't tell")
    text = page_text(at)
    assert f"A (left) was **{a.left_checkpoint}**" in text or f"A (left) was {a.left_checkpoint}" in text
    assert "motion: A (left); quality: Tie / can't tell" in text
