"""Study results: vote intervals resample cases (default), voters or votes, and the page says which."""

from __future__ import annotations


def _vote(at, token: str, n: int):
    at.text_input(key="auth_token_input").input(token).run()
    for _ in range(n):
        at.radio(key="vote_motion").set_value("A (left)")
        at.radio(key="vote_quality").set_value("Tie / can't tell")
        next(b for b in at.button if b.label == "Submit vote").click().run()
        assert not at.exception, [e.message for e in at.exception]


def test_interval_unit_is_a_switch_and_every_table_names_it(make_app, open_page, page_text, filled_workdir):
    at = open_page(make_app(filled_workdir), "vote")
    _vote(at, "tok-alice", 4)
    at.switch_page("views/results.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.radio(key="res_unit").value == "cases"
    rates = next(d.value for d in at.dataframe if "wins_a" in d.value.columns)
    assert any("percentile bootstrap over cases" in c for c in rates.columns)
    at.radio(key="res_unit").set_value("votes").run()
    rates = next(d.value for d in at.dataframe if "wins_a" in d.value.columns)
    assert any("Wilson" in c for c in rates.columns)
    at.radio(key="res_unit").set_value("voters").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "percentile bootstrap over voters" in page_text(at)
