"""Leaderboard: every checkpoint on a suite, ObjMC / FID / FVD with intervals, human ratings.

A column holds numbers of one identity only (protocol, tracker or backbone, sizes); the
paper's numbers are in their own table with their own protocol label, never ranked.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, queries, ui
from eval import catalog
from eval.display import fmt_interval, short_names

st.title("Leaderboard")
url = ui.workdir_or_stop()

metrics = catalog.labelled(queries.read(url, "metrics"))  # identities as labels: one per identity
if metrics.empty:
    ui.empty("No metrics yet: this workdir's `metrics` table is empty.", "evaluate", url)
    st.subheader(f"Published reference ({data.PAPER_PROTOCOL})")
    st.dataframe(data.published_table(), hide_index=True)
    st.stop()

checkpoints = queries.read(url, "checkpoints")
suites = sorted(metrics["suite"].dropna().unique().tolist())

c1, c2 = st.columns([2, 2])
with c1:
    suite = ui.pick("Suite", suites, key="lb_suite")
options = data.identity_options(metrics, suite)
with c2:
    sort_choices = {data.METRIC_LABELS[m]: m for m in data.METRICS if m in options}
    sort_choices.update({"Human rating (motion)": "human_motion", "Human rating (quality)": "human_quality", "Step": "step"})
    sort_label = ui.pick("Sort by", list(sort_choices), key="lb_sort")

identities: dict[str, str] = {}
for metric, ids in options.items():
    identities[metric] = ui.pick(
        f"{data.METRIC_LABELS[metric]} measured as", ids, key=f"lb_id_{metric}",
        help="The protocol, tracker or backbone and sizes of the numbers in this column. Numbers measured differently are never ranked together.",
    )
multi = {m: i for m, i in options.items() if len(i) > 1}
if multi:
    counts = ", ".join(f"{data.METRIC_LABELS[m]}: {len(i)}" for m, i in multi.items())
    st.caption(f"Several identities measured on this suite ({counts}); each column shows the one picked above.")

try:
    ratings = queries.ratings(url, suite)
except Exception as err:  # noqa: BLE001 - a broken vote store must not hide the metrics
    st.warning(f"Human ratings unavailable: {err}")
    ratings = None

objmc = catalog.labelled(queries.read(url, "objmc", columns=["checkpoint_id", "item_id", "entity_id", "per_frame", "identity"],
                                      filters=[("suite", "==", suite)]), "objmc")
sort_by = sort_choices.get(sort_label, "objmc")
table = data.leaderboard(metrics, checkpoints, suite, identities, ratings, sort_by=sort_by, objmc=objmc)
if table.empty:
    st.info(f"No metric rows for suite {suite!r} with the chosen identities.")
    st.stop()

search = st.text_input("Filter checkpoints", key="lb_search", placeholder="part of a checkpoint id")
if search:
    table = table[table["checkpoint_id"].str.contains(search, case=False, regex=False)]

names = short_names(table["checkpoint_id"])
view = pd.DataFrame({"rank": table["rank"], "checkpoint": table["checkpoint_id"].map(names), "step": table.get("step")})
col_cfg: dict = {
    "rank": st.column_config.NumberColumn("rank", format="%d", help="Within this suite and these identities"),
    "step": st.column_config.NumberColumn("step", format="%d"),
}
for m in data.METRICS:
    if m not in table.columns:
        continue
    label = data.METRIC_LABELS[m]
    view[label] = table[m]
    view[f"{label} 95% CI"] = [fmt_interval(lo, hi) if pd.notna(v) else "" for v, lo, hi in zip(table[m], table[f"{m}_ci_low"], table[f"{m}_ci_high"])]
    direction = "Lower" if catalog.METRICS[m].lower_is_better else "Higher"
    col_cfg[label] = st.column_config.NumberColumn(label, format="%.4g", help=f"{identities.get(m)}. {direction} is better.")
if sort_by in data.METRICS:
    view[f"{data.METRIC_LABELS[sort_by]} vs next"] = table["vs_next"]
for aspect in ("motion", "quality"):
    c = f"human_{aspect}"
    if c in table.columns:
        label = f"human {aspect} (BT)"
        view[label] = table[c]
        view[f"{aspect} votes"] = table[f"{c}_n"]
        col_cfg[label] = st.column_config.NumberColumn(
            label, format="%.0f",
            help="Bradley-Terry rating from the blind pairwise votes (Elo scale, mean 1000; higher is better). Intervals: Study results page.",
        )
        col_cfg[f"{aspect} votes"] = st.column_config.NumberColumn(f"{aspect} votes", format="%d")
view["id"] = table["checkpoint_id"]
view["model"] = table.get("model")
view["parent"] = table.get("parent")
view["created"] = table["created_at"].map(ui.fmt_time) if "created_at" in table else None

empty = [c for c in view.columns if c not in ("rank", "checkpoint") and (view[c].isna() | (view[c].astype(str) == "")).all()]
view = view.drop(columns=empty)  # a column nothing on this suite fills (no parents, no votes yet) is left out
st.dataframe(view, hide_index=True, column_config=col_cfg, width="stretch", height=min(38 * (len(view) + 1) + 4, 640))
st.caption(
    f"{len(table)} checkpoints on **{suite}**. Lower is better for ObjMC (pixels), FID and FVD. Columns: "
    + "; ".join(f"**{data.METRIC_LABELS[m]}**: {identities[m]}" for m in data.METRICS if m in identities)
    + ". ObjMC intervals: studentised bootstrap over items; FID/FVD: bias-corrected grouped jackknife over items "
    "(the interval is for the true distance, so it may lie below the plug-in value; none with fewer samples than "
    "feature dimensions). 'vs next' says better only where "
    "a paired interval on the shared items excludes 0."
)

st.subheader("Over training")
plotted = [m for m in data.METRICS if m in identities]
if plotted:
    chart_metric = st.radio("Metric", plotted, format_func=lambda m: data.METRIC_LABELS[m], horizontal=True, key="lb_chart_metric")
    curves = charts.metric_curves(metrics, checkpoints, suite, chart_metric, identities[chart_metric])
    if curves.empty:
        st.info("No values of this metric to plot.")
    else:
        st.altair_chart(charts.metric_vs_step(curves, data.METRIC_LABELS[chart_metric]), width="stretch")
        st.caption(f"One line per run over its checkpoints, the band its 95% interval; dashed: references (`static`, `warp`), "
                   f"which have no steps. Measured as: {identities[chart_metric]}.")

history = catalog.labelled(queries.read(url, "metrics_history", filters=[("suite", "==", suite)]))
changes = data.metric_changes(history, suite)
if not changes.empty:
    with st.expander(f"Metrics that changed ({len(changes)})"):
        st.dataframe(changes.assign(updated=changes["updated"].map(ui.fmt_time), computed_before=changes["computed_before"].map(ui.fmt_time)), hide_index=True, width="stretch")
        st.caption("A metric is recomputed from all scored items whenever evaluate runs; the old value is kept as history.")

st.subheader(f"Published ({data.PAPER_PROTOCOL})")
st.dataframe(data.published_table(), hide_index=True)
st.caption(
    f"The paper's numbers on VIPSeg val as published ({data.PAPER}), measured with its own tools: reference only, "
    "never ranked or sorted with the numbers above."
)
with st.expander("Paper ablation (published, VIPSeg val)"):
    st.dataframe(data.PUBLISHED_ABLATION.rename(columns=data.METRIC_LABELS).assign(protocol=data.PAPER_PROTOCOL), hide_index=True)

st.download_button(
    "Download this table (CSV)", view.to_csv(index=False).encode(), file_name=f"leaderboard-{suite}.csv", mime="text/csv", key="lb_csv"
)
