"""Every page renders on an empty workdir (with a helpful message) and on a filled one."""

from __future__ import annotations

import pytest


ALL = ["leaderboard", "compare", "training", "vote", "results"]
EMPTY_HINT = {
    "leaderboard": "draganything evaluate",
    "compare": "draganything evaluate",
    "training": "draganything train",
    "vote": "draganything generate",
    "results": "No votes yet",
}


@pytest.mark.parametrize("page", ALL)
def test_page_on_empty_workdir_explains_what_to_run(make_app, open_page, page_text, empty_workdir, page):
    at = open_page(make_app(empty_workdir), page)
    text = page_text(at)
    assert EMPTY_HINT[page] in text, text
    assert not at.error


def test_no_workdir_given_says_how_to_start(make_app, open_page, page_text):
    at = open_page(make_app(None), "leaderboard")
    assert "No workdir given" in page_text(at)


def test_missing_workdir_is_named(make_app, open_page, page_text, tmp_path):
    at = open_page(make_app(tmp_path / "nope"), "leaderboard")
    assert "does not exist" in page_text(at)


def test_leaderboard_filled(make_app, open_page, page_text, filled_workdir):
    at = open_page(make_app(filled_workdir), "leaderboard")
    df = at.dataframe[0].value
    measured = df[df["source"] == "measured"]
    assert set(measured["checkpoint"]) == {"ck-000", "ck-001", "ck-002"}
    # Lower ObjMC is better: rank 1 has the smallest value.
    objmc_col = next(c for c in df.columns if c.startswith("ObjMC ["))
    assert measured.sort_values("rank")[objmc_col].is_monotonic_increasing
    # The paper's rows are there, marked published and unranked.
    pub = df[df["source"].str.startswith("published")]
    assert len(pub) == 2 and pub["rank"].isna().all()
    assert sorted(pub[objmc_col].tolist()) == [305.7, 324.6]
    assert "ObjMC 95% CI" in df.columns


def test_leaderboard_never_mixes_backbones(make_app, open_page, filled_workdir):
    at = open_page(make_app(filled_workdir), "leaderboard")
    fid = at.selectbox(key="lb_bb_fid")
    assert fid.options == ["inception-2015-12-05", "fixed-seed-tiny"]
    col = "FID [inception-2015-12-05]"
    values = at.dataframe[0].value
    assert col in values.columns
    inception = values[values["source"] == "measured"][col]
    fid.set_value("fixed-seed-tiny").run()
    df = at.dataframe[0].value
    col2 = "FID [fixed-seed-tiny]"
    assert col2 in df.columns and col not in df.columns
    measured = df[df["source"] == "measured"].set_index("checkpoint")
    # ck-002 has no fixed-seed FID: it is blank, not filled from the other backbone.
    assert measured.loc["ck-002", col2] != measured.loc["ck-002", col2]  # NaN
    assert not set(measured[col2].dropna()) & set(inception)


def test_leaderboard_sort_and_suite_filter(make_app, open_page, filled_workdir):
    at = open_page(make_app(filled_workdir), "leaderboard")
    at.selectbox(key="lb_sort").set_value("FVD").run()
    df = at.dataframe[0].value
    m = df[df["source"] == "measured"].sort_values("rank")
    assert m["FVD [i3d-kinetics400]"].is_monotonic_increasing


def test_compare_filled_shows_deltas_scatter_and_videos(make_app, open_page, page_text, filled_workdir):
    at = open_page(make_app(filled_workdir), "compare")
    deltas = at.dataframe[0].value
    assert {"ObjMC", "FID", "FVD"} <= set(deltas["metric"])
    # one delta row per (metric, backbone) both have: FID on the shared backbone(s) only
    assert set(deltas.loc[deltas["metric"] == "FID", "backbone"]) <= {"inception-2015-12-05", "fixed-seed-tiny"}
    objmc = deltas[deltas["metric"] == "ObjMC"].iloc[0]
    assert "paired bootstrap" in objmc["interval"]
    assert len(at.get("vega_lite_chart")) >= 1
    videos = at.get("video")
    assert len(videos) == 2
    # overlays (ground truth + tracked) were rendered into the workdir's cache
    assert list((filled_workdir / "cache" / "dashboard").glob("*.mp4"))


def test_training_filled(make_app, open_page, filled_workdir):
    at = open_page(make_app(filled_workdir), "training")
    assert at.multiselect(key="tr_runs").value
    assert len(at.get("graphviz_chart")) == 1
    at.selectbox(key="tr_cfg").set_value("ck-002").run()
    assert not at.exception


def test_vote_page_for_a_reader_has_no_form(make_app, open_page, page_text, filled_workdir):
    at = open_page(make_app(filled_workdir), "vote")
    assert "voter token" in page_text(at)
    assert not at.radio and not at.get("video")


def test_results_filled_without_votes(make_app, open_page, page_text, filled_workdir):
    at = open_page(make_app(filled_workdir), "results")
    assert "No votes yet" in page_text(at)


def test_launch_command_and_missing_workdir(tmp_path):
    import dashboard

    cmd = dashboard.launch_command(str(tmp_path), port=8765, headless=True)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("dashboard/app.py")
    assert cmd[-3:] == ["--", "--workdir", str(tmp_path)]
    assert "8765" in cmd and "--server.headless" in cmd
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dashboard.launch(str(tmp_path / "missing"))
