"""Vote maths (eval/votes.py) and the dashboard's pure helpers (media path safety, deltas)."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest

from eval import votes as vm


def V(rows):
    return pd.DataFrame(rows, columns=["aspect", "left_checkpoint", "right_checkpoint", "choice"])


def test_wilson_matches_the_closed_form():
    lo, hi = vm.wilson_interval(63, 100)
    z = 1.959963984540054
    p, n = 0.63, 100
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert lo == pytest.approx(c - h, abs=1e-12) and hi == pytest.approx(c + h, abs=1e-12)
    assert (round(lo, 4), round(hi, 4)) == (0.5322, 0.7182)
    lo0, hi0 = vm.wilson_interval(0, 10)
    assert lo0 == 0.0 and 0.27 < hi0 < 0.28
    lo1, hi1 = vm.wilson_interval(10, 10)
    assert hi1 == 1.0 and 0.72 < lo1 < 0.73
    assert all(math.isnan(x) for x in vm.wilson_interval(0, 0))
    arr_lo, arr_hi = vm.wilson_interval(np.array([1, 5]), np.array([10, 10]))
    assert arr_lo.shape == (2,) and arr_lo[0] < arr_lo[1]
    with pytest.raises(ValueError):
        vm.wilson_interval(11, 10)


def test_pair_win_rates_fold_sides_and_handle_ties():
    votes = V(
        [("motion", "x", "y", "left")] * 5  # x wins 5 (shown left)
        + [("motion", "y", "x", "right")] * 1  # x wins 1 more (shown right)
        + [("motion", "y", "x", "left")] * 2  # y wins 2
        + [("motion", "x", "y", "tie")] * 2
    )
    half = vm.pair_win_rates(votes, ties="half", unit="votes").iloc[0]
    assert (half.checkpoint_a, half.checkpoint_b) == ("x", "y")
    assert (half.n, half.wins_a, half.wins_b, half.ties) == (10, 6, 2, 2)
    assert half.win_rate_a == pytest.approx(0.7) and half.win_rate_b == pytest.approx(0.3)
    assert half.ci_low < 0.7 < half.ci_high
    excl = vm.pair_win_rates(votes, ties="exclude", unit="votes").iloc[0]
    assert excl.n_used == 8 and excl.win_rate_a == pytest.approx(0.75) and excl.ties == 2
    with pytest.raises(ValueError):
        vm.pair_win_rates(votes, ties="drop", unit="votes")


def test_bad_votes_are_rejected():
    with pytest.raises(ValueError, match="choice"):
        vm.pair_win_rates(V([("motion", "x", "y", "maybe")]), unit="votes")
    with pytest.raises(ValueError, match="itself"):
        vm.pair_win_rates(V([("motion", "x", "x", "left")]), unit="votes")


def test_head_to_head_is_the_papers_table_shape():
    votes = V([("motion", "DA", "DN", "left")] * 63 + [("motion", "DN", "DA", "left")] * 37 + [("quality", "DA", "DN", "tie")] * 10)
    t = vm.head_to_head(votes, "DA", "DN", unit="votes").set_index("aspect")
    assert t.loc["motion", "DA"] == pytest.approx(0.63) and t.loc["motion", "DN"] == pytest.approx(0.37)
    assert t.loc["quality", "DA"] == pytest.approx(0.5)
    assert t.loc["motion", "ci_low"] == pytest.approx(vm.wilson_interval(63, 100)[0])


def simulate(strengths: dict[str, float], n: int, seed: int = 0, tie_p: float = 0.1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = list(strengths)
    rows = []
    for _ in range(n):
        a, b = rng.choice(names, 2, replace=False)
        u = rng.random()
        if u < tie_p:
            ch = "tie"
        else:
            pa = strengths[a] / (strengths[a] + strengths[b])
            ch = "left" if rng.random() < pa else "right"
        rows.append(("motion", a, b, ch))
    return V(rows)


def test_bradley_terry_recovers_known_strengths():
    true = {"a": 1.0, "b": 2.0, "c": 4.0}
    votes = simulate(true, 6000, tie_p=0.0)
    bt = vm.bradley_terry(votes, aspect="motion").set_index("checkpoint_id")
    assert list(bt.sort_values("rating").index) == ["a", "b", "c"]
    # log-strength gaps: ln 2 each, i.e. 400 log10(2) ~ 120.4 Elo points
    gap = 400 * math.log10(2)
    assert bt.loc["b", "rating"] - bt.loc["a", "rating"] == pytest.approx(gap, abs=20)
    assert bt.loc["c", "rating"] - bt.loc["b", "rating"] == pytest.approx(gap, abs=20)
    assert bt["rating"].mean() == pytest.approx(1000)
    assert bt["n"].sum() == 2 * 6000


def test_bradley_terry_stays_finite_for_undefeated_and_disconnected():
    votes = V([("motion", "a", "b", "left")] * 5 + [("motion", "c", "d", "right")] * 5)
    bt = vm.bradley_terry(votes)
    assert np.isfinite(bt["rating"]).all()
    r = bt.set_index("checkpoint_id")["rating"]
    assert r["a"] > r["b"] and r["d"] > r["c"]
    assert r["a"] == pytest.approx(r["d"])  # symmetric situations, symmetric ratings


def test_bootstrap_intervals_cover_point_and_shrink_with_data():
    small = vm.bradley_terry_bootstrap(simulate({"a": 1, "b": 3}, 40), n_boot=200, seed=1, unit="votes").set_index("checkpoint_id")
    big = vm.bradley_terry_bootstrap(simulate({"a": 1, "b": 3}, 4000), n_boot=200, seed=1, unit="votes").set_index("checkpoint_id")
    for t in (small, big):
        assert (t["ci_low"] <= t["rating"] + 1e-6).all() and (t["rating"] <= t["ci_high"] + 1e-6).all()
    assert (big["ci_high"] - big["ci_low"]).max() < (small["ci_high"] - small["ci_low"]).min()
    again = vm.bradley_terry_bootstrap(simulate({"a": 1, "b": 3}, 40), n_boot=200, seed=1, unit="votes").set_index("checkpoint_id")
    pd.testing.assert_frame_equal(small, again)  # seeded: reproducible


def test_empty_votes_give_empty_tables():
    empty = V([])
    assert vm.pair_win_rates(empty).empty
    assert vm.bradley_terry(empty).empty
    assert vm.bradley_terry_bootstrap(empty).empty
    assert vm.votes_per_voter(empty.assign(voter=[], voted_at=[])).empty


def test_votes_per_voter():
    v = V([("motion", "a", "b", "left"), ("quality", "a", "b", "tie"), ("motion", "a", "c", "right")])
    v["voter"] = ["u1", "u1", "u2"]
    v["voted_at"] = pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"], utc=True)
    t = vm.votes_per_voter(v).set_index("voter")
    assert t.loc["u1", "votes"] == 2 and t.loc["u1", "ties"] == 1 and t.loc["u1", "tie_share"] == 0.5
    assert t.loc["u2", "motion_votes"] == 1 and t.loc["u2", "quality_votes"] == 0


# ------------------------------------------------------------- media path safety


def test_media_paths_are_confined_to_the_workdir(tmp_path):
    from core.tables import Workdir
    from dashboard.media import MediaError, resolve_media

    wd = Workdir(str(tmp_path / "wd"))
    (tmp_path / "wd" / "samples").mkdir()
    (tmp_path / "wd" / "samples" / "ok.mp4").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", tmp_path / "wd" / "samples" / "link.mp4")
    assert resolve_media(wd, "samples/ok.mp4").endswith("samples/ok.mp4")
    for bad in ("../secret.txt", "samples/../../secret.txt", "/etc/passwd", "file:///etc/passwd", "samples/link.mp4", "", "C:/x.mp4", "samples/missing.mp4"):
        with pytest.raises(MediaError):
            resolve_media(wd, bad)


def test_leaderboard_ranks_within_one_identity_only():
    from dashboard import data

    t = pd.Timestamp("2026-01-01", tz="UTC")
    m = pd.DataFrame(
        [
            dict(checkpoint_id="a", suite="b", metric="fid", identity="project | inception", value=10.0, ci_low=9, ci_high=11, n=5, created_at=t),
            dict(checkpoint_id="b", suite="b", metric="fid", identity="project | tiny", value=1.0, ci_low=0, ci_high=2, n=5, created_at=t),
            dict(checkpoint_id="c", suite="b", metric="fid", identity="project | inception", value=5.0, ci_low=4, ci_high=6, n=5, created_at=t),
            dict(checkpoint_id="d", suite="b", metric="fid", identity="official | inception", value=2.0, ci_low=1, ci_high=3, n=5, created_at=t),
        ]
    )
    opts = data.identity_options(m, "b")
    assert opts == {"fid": ["project | inception", "official | inception", "project | tiny"]}
    lb = data.leaderboard(m, pd.DataFrame(), "b", {"fid": "project | inception"}, sort_by="fid")
    assert lb["checkpoint_id"].tolist() == ["c", "a"] and lb["rank"].tolist() == [1, 2]  # d: same backbone, other protocol
    assert lb["vs_next"].iloc[0].startswith("no paired interval")  # no replicates stored: no verdict


def test_resolve_labels_by_item_id_forms():
    from dashboard import data

    labels = pd.DataFrame(
        [
            dict(dataset="vipseg", split="val", video_id="v1", entity_id=1),
            dict(dataset="vipseg", split="train", video_id="v1", entity_id=2),
            dict(dataset="vipseg", split="val", video_id="v2", entity_id=3),
        ]
    )
    assert data.resolve_labels(labels, "v2")["entity_id"].tolist() == [3]
    assert data.resolve_labels(labels, "vipseg/train/v1")["entity_id"].tolist() == [2]
    assert data.resolve_labels(labels, "v1", "vipseg-val")["entity_id"].tolist() == [1]
    assert data.resolve_labels(labels, "x/y/v2")["entity_id"].tolist() == [3]
    assert data.resolve_labels(labels, "nope").empty
