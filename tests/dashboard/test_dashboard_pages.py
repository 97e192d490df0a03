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
    assert set(df["checkpoint"]) == {"ck-000", "ck-001", "ck-002"}
    # Lower ObjMC is better: rank 1 has the smallest value.
    assert df.sort_values("rank")["ObjMC"].is_monotonic_increasing
    assert "ObjMC 95% CI" in df.columns and "ObjMC vs next" in df.columns
    # No empty column: the model column names each checkpoint's base model and size (from its config).
    assert not [c for c in df.columns if (df[c].isna() | (df[c].astype(str) == "")).all()]
    assert set(df["model"]) == {"embedded tiny model, 8 frames at 64x64"}
    # 'better than next' only where the paired interval excludes 0 (2 items: the bootstrap can still decide or not)
    assert set(df["ObjMC vs next"]) <= {"", "better than next", "worse than next", "no clear difference"}
    # The paper's rows are in their own table with their own protocol label, never in the ranked one.
    assert not df["checkpoint"].str.contains("DragAnything|DragNUWA").any()
    pub = next(d.value for d in at.dataframe if "method" in d.value.columns)
    assert sorted(pub["ObjMC"].tolist()) == [305.7, 324.6]
    assert (pub["protocol"] == "paper: pytorch-fid / TF I3D / CoTracker2").all()
    assert "Published (paper: pytorch-fid / TF I3D / CoTracker2)" in [s.value for s in at.subheader]
    # the history shows ObjMC changed (an earlier evaluation on fewer items)
    assert any("Metrics that changed" in e.label for e in at.expander)


def test_leaderboard_never_mixes_identities(make_app, open_page, filled_workdir):
    at = open_page(make_app(filled_workdir), "leaderboard")
    fid = at.selectbox(key="lb_id_fid")
    assert [o.split(" | ")[1] for o in fid.options] == ["inception-2015-12-05", "fixed-seed-tiny"]
    inception = at.dataframe[0].value.set_index("checkpoint")["FID"]
    fid.set_value(fid.options[1]).run()
    measured = at.dataframe[0].value.set_index("checkpoint")
    # ck-002 has no fixed-seed FID: it is blank, not filled from the other identity.
    assert measured.loc["ck-002", "FID"] != measured.loc["ck-002", "FID"]  # NaN
    assert not set(measured["FID"].dropna()) & set(inception)


def test_leaderboard_sort_and_suite_filter(make_app, open_page, filled_workdir):
    at = open_page(make_app(filled_workdir), "leaderboard")
    at.selectbox(key="lb_sort").set_value("FVD").run()
    df = at.dataframe[0].value
    assert df.sort_values("rank")["FVD"].is_monotonic_increasing and "FVD vs next" in df.columns


def test_compare_filled_shows_deltas_scatter_and_videos(make_app, open_page, page_text, filled_workdir):
    at = open_page(make_app(filled_workdir), "compare")
    deltas = at.dataframe[0].value
    assert {"ObjMC", "FID", "FVD"} <= set(deltas["metric"])
    # one delta row per (metric, identity) both have
    assert set(deltas.loc[deltas["metric"] == "FID", "identity"].str.split(" | ", regex=False).str[1]) <= {"inception-2015-12-05", "fixed-seed-tiny"}
    objmc = deltas[deltas["metric"] == "ObjMC"].iloc[0]
    assert "paired bootstrap of the flat-mean difference" in objmc["interval"]
    fvd = deltas[deltas["metric"] == "FVD"].iloc[0]
    assert "paired jackknife" in fvd["interval"]
    assert len(at.get("vega_lite_chart")) >= 1
    videos = at.get("video")
    assert len(videos) == 2
    # overlays (the conditions' target paths + the stored measured tracks) were rendered into the workdir's cache
    assert list((filled_workdir / "cache" / "dashboard").glob("*.mp4"))
    assert "note: synthetic row" in page_text(at)


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
