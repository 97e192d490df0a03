"""Vote intervals resample cases or voters (whole clusters of votes), and say which."""

import numpy as np
import pandas as pd
import pytest

from eval import votes as vm


def clustered(n_cases: int, voters: int, seed: int = 0, p_case_sd: float = 0.35) -> pd.DataFrame:
    """Votes where each case has its own preference for 'a' (cases differ a lot), every voter votes every case."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_cases):
        p = float(np.clip(0.5 + rng.normal(0, p_case_sd), 0.02, 0.98))
        for v in range(voters):
            a_left = rng.random() < 0.5
            a_wins = rng.random() < p
            choice = "left" if a_wins == a_left else "right"
            rows.append(dict(aspect="motion", item_id=f"case{c}", voter=f"voter{v}",
                             left_checkpoint="a" if a_left else "b", right_checkpoint="b" if a_left else "a", choice=choice))
    return pd.DataFrame(rows)


def test_case_resampling_is_wider_than_vote_resampling_when_cases_differ():
    votes = clustered(30, 20)
    per_vote = vm.pair_win_rates(votes, unit="votes").iloc[0]
    per_case = vm.pair_win_rates(votes, unit="cases").iloc[0]
    assert per_vote.win_rate_a == per_case.win_rate_a
    assert (per_case.ci_high - per_case.ci_low) > 1.8 * (per_vote.ci_high - per_vote.ci_low)
    assert per_vote.interval.startswith("Wilson") and per_case.interval == "percentile bootstrap over cases"


def test_case_intervals_cover_the_population_rate_where_vote_intervals_do_not():
    # The true rate is 0.5 (case preferences centred on 0.5): over 60 studies, the
    # case-resampled interval covers it near 95%, the per-vote one far less often.
    hits = {"cases": 0, "votes": 0}
    for s in range(60):
        votes = clustered(30, 20, seed=100 + s)
        for unit in hits:
            r = vm.pair_win_rates(votes, unit=unit, n_boot=300).iloc[0]
            hits[unit] += r.ci_low <= 0.5 <= r.ci_high
    assert hits["cases"] / 60 >= 0.85, hits
    assert hits["votes"] / 60 <= 0.7, hits


def test_bradley_terry_intervals_over_voters_and_cases_name_their_unit():
    votes = clustered(12, 6)
    for unit in ("cases", "voters", "votes"):
        bt = vm.bradley_terry_bootstrap(votes, aspect="motion", n_boot=100, unit=unit)
        assert (bt["interval"] == vm.interval_label(unit)).all()
        assert (bt["ci_low"] <= bt["rating"] + 1e-6).all() and (bt["rating"] <= bt["ci_high"] + 1e-6).all()
    cases = vm.bradley_terry_bootstrap(votes, aspect="motion", n_boot=200, unit="cases").set_index("checkpoint_id")
    single = vm.bradley_terry_bootstrap(votes, aspect="motion", n_boot=200, unit="votes").set_index("checkpoint_id")
    assert (cases["ci_high"] - cases["ci_low"]).min() > (single["ci_high"] - single["ci_low"]).max()


def test_resampling_cases_needs_the_item_column():
    votes = clustered(3, 2).drop(columns="item_id")
    with pytest.raises(ValueError, match="item_id"):
        vm.pair_win_rates(votes, unit="cases")
    with pytest.raises(ValueError, match="unit must be"):
        vm.pair_win_rates(clustered(3, 2), unit="pairs")
