"""Leaderboard: every checkpoint on a suite, ObjMC / FID / FVD with intervals, human ratings."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, queries, ui

st.title("Leaderboard")
url = ui.workdir_or_stop()

metrics = queries.read(url, "metrics")
if metrics.empty:
    ui.empty("No metrics yet: this workdir's `metrics` table is empty.", "evaluate", url)
    st.subheader("Published reference (VIPSeg val, 256 x 256, 14 frames)")
    st.dataframe(data.PUBLISHED.rename(columns={"objmc": "ObjMC", "fvd": "FVD", "fid": "FID"}), hide_index=True)
    st.stop()

checkpoints = queries.read(url, "checkpoints")
suites = sorted(metrics["suite"].dropna().unique().tolist())

c1, c2, c3 = st.columns([2, 2, 1])
with c1:
    suite = ui.pick("Suite", suites, key="lb_suite")
options = data.backbone_options(metrics, suite)
with c2:
    sort_choices = {data.METRIC_LABELS[m]: m for m in data.METRICS if m in options}
    sort_choices.update({"Human rating (motion)": "human_motion", "Human rating (quality)": "human_quality", "Step": "step"})
    sort_label = ui.pick("Sort by", list(sort_choices), key="lb_sort")
with c3:
    show_published = st.toggle("Published rows", value=True, key="lb_published", help="The paper's Table 1 numbers, for VIPSeg suites")

backbones: dict[str, str] = {}
if options:
    cols = st.columns(len(options))
    for col, (metric, bbs) in zip(cols, options.items()):
        with col:
            backbones[metric] = ui.pick(
                f"{data.METRIC_LABELS[metric]} backbone", bbs, key=f"lb_bb_{metric}",
                help="A column holds numbers of one backbone only; numbers from different backbones are never ranked together.",
            )
multi = {m: b for m, b in options.items() if len(b) > 1}
if multi:
    st.caption(
        "Several backbones measured on this suite: "
        + "; ".join(f"{data.METRIC_LABELS[m]}: {', '.join(b)}" for m, b in multi.items())
        + ". Each column shows the backbone picked above."
    )

try:
    ratings = queries.ratings(url, suite)
except Exception as err:  # noqa: BLE001 - a broken vote store must not hide the metrics
    st.warning(f"Human ratings unavailable: {err}")
    ratings = None

table = data.leaderboard(metrics, checkpoints, suite, backbones, ratings, sort_by=sort_choices.get(sort_label, "objmc"))
if table.empty:
    st.info(f"No metric rows for suite {suite!r} with the chosen backbones.")
    st.stop()

search = st.text_input("Filter checkpoints", key="lb_search", placeholder="part of a checkpoint id")
if search:
    table = table[table["checkpoint_id"].str.contains(search, case=False, regex=False)]

view = pd.DataFrame({"rank": table["rank"], "checkpoint": table["checkpoint_id"], "step": table.get("step")})
col_cfg: dict = {
    "rank": st.column_config.NumberColumn("rank", format="%d", help="Within this suite and these backbones"),
    "step": st.column_config.NumberColumn("step", format="%d"),
}
for m in data.METRICS:
    if m not in table.columns:
        continue
    label = f"{data.METRIC_LABELS[m]} [{backbones.get(m)}]"
    view[label] = table[m]
    view[f"{data.METRIC_LABELS[m]} 95% CI"] = [data.fmt_ci(lo, hi) for lo, hi in zip(table[f"{m}_ci_low"], table[f"{m}_ci_high"])]
    col_cfg[label] = st.column_config.NumberColumn(label, format="%.2f", help=f"Lower is better. n = items/videos measured.")
for aspect in ("motion", "quality"):
    c = f"human_{aspect}"
    if c in table.columns:
        label = f"human {aspect} (BT)"
        view[label] = table[c]
        view[f"{aspect} votes"] = table[f"{c}_n"]
        col_cfg[label] = st.column_config.NumberColumn(
            label, format="%.0f",
            help="Bradley-Terry rating from the blind pairwise votes (Elo scale, mean 1000; higher is better). Bootstrap intervals: Study results page.",
        )
        col_cfg[f"{aspect} votes"] = st.column_config.NumberColumn(f"{aspect} votes", format="%d")
view["model"] = table.get("model")
view["parent"] = table.get("parent")
view["created"] = table["created_at"].map(ui.fmt_time) if "created_at" in table else None
view["source"] = "measured"

if show_published and data.published_applies(suite):
    pub = pd.DataFrame(
        {
            "checkpoint": data.PUBLISHED["checkpoint_id"],
            **{f"{data.METRIC_LABELS[m]} [{backbones.get(m)}]": data.PUBLISHED[m] for m in data.METRICS if m in table.columns},
            "source": f"published ({data.PAPER})",
        }
    )
    view = pd.concat([view, pub], ignore_index=True)
    text_cols = [c for c in view.columns if c.endswith("CI") or c in ("model", "parent", "created")]
    view[text_cols] = view[text_cols].astype(object).where(view[text_cols].notna(), "")

st.dataframe(view, hide_index=True, column_config=col_cfg, width="stretch", height=min(38 * (len(view) + 1) + 4, 640))
st.caption(
    f"{len(table)} checkpoints on **{suite}**. Lower is better for ObjMC (pixels), FID and FVD; intervals are the "
    "evaluate stage's bootstrap 95% intervals. Click a column header to sort."
    + (" Published rows are the paper's numbers (VIPSeg val, their own FID/FVD backbones): reference only, never ranked." if show_published and data.published_applies(suite) else "")
)
if show_published and not data.published_applies(suite):
    with st.expander("Published reference (VIPSeg val)"):
        st.dataframe(data.PUBLISHED.rename(columns={"objmc": "ObjMC", "fvd": "FVD", "fid": "FID"}), hide_index=True)
with st.expander("Paper ablation (published, VIPSeg val)"):
    st.dataframe(data.PUBLISHED_ABLATION.rename(columns={"objmc": "ObjMC", "fvd": "FVD", "fid": "FID"}), hide_index=True)

st.download_button(
    "Download this table (CSV)", view.to_csv(index=False).encode(), file_name=f"leaderboard-{suite}.csv", mime="text/csv", key="lb_csv"
)
