"""Training: loss and learning-rate curves per checkpoint's run, throughput, checkpoint lineage."""

from __future__ import annotations

import json

import altair as alt
import streamlit as st

from dashboard import charts, data, queries, ui

st.title("Training")
url = ui.workdir_or_stop()

log = queries.read(url, "train_log")
checkpoints = queries.read(url, "checkpoints")
if log.empty and checkpoints.empty:
    ui.empty("No training yet: the `train_log` and `checkpoints` tables are empty.", "train", url)
    st.stop()

if not log.empty:
    st.subheader("Loss curves")
    order = checkpoints.sort_values("created_at", ascending=False)["checkpoint_id"].tolist() if not checkpoints.empty else []
    log = charts.training_runs(log)
    order = list(dict.fromkeys(charts.run_of(c) for c in order))
    runs = [r for r in order if r in set(log["run"])] + sorted(set(log["run"]) - set(order))
    chosen = st.multiselect("Runs", runs, default=runs[:6], key="tr_runs")
    c1, c2 = st.columns(2)
    with c1:
        alpha = st.slider("Smoothing (EMA)", 0.0, 0.99, 0.6, 0.01, key="tr_smooth")
    with c2:
        logy = st.toggle("Log scale", value=True, key="tr_logy")
    sub = log[log["run"].isin(chosen)].sort_values(["run", "step"])
    if sub.empty:
        st.info("Pick at least one run.")
    else:
        sub = sub.assign(loss_smoothed=sub.groupby("run")["loss"].transform(lambda s: data.smooth(s, alpha)))
        scale = alt.Scale(type="log") if logy and (sub["loss"] > 0).all() else alt.Scale(type="linear")
        base = alt.Chart(sub).encode(x=alt.X("step:Q", title="step"), color=alt.Color("run:N", title="run"))
        raw = base.mark_line(opacity=0.25).encode(y=alt.Y("loss:Q", scale=scale, title="loss (masked MSE)"))
        smooth = base.mark_line().encode(y=alt.Y("loss_smoothed:Q", scale=scale), tooltip=["run", "step", alt.Tooltip("loss:Q", format=".4g")])
        st.altair_chart((raw + smooth).properties(height=charts.MIN_PLOT_PX + 60), width="stretch")
        if sub["lr"].notna().any():
            st.altair_chart(
                alt.Chart(sub).mark_line().encode(x="step:Q", y=alt.Y("lr:Q", title="learning rate", axis=alt.Axis(format=".1e")), color="run:N")
                .properties(height=charts.MIN_PLOT_PX),
                width="stretch",
            )
        summary = charts.training_summary(sub)
        st.dataframe(
            summary, hide_index=True, width="stretch",
            column_config={
                "last_loss": st.column_config.NumberColumn(format="%.4g"), "min_loss": st.column_config.NumberColumn(format="%.4g"),
                "steps_per_s": st.column_config.NumberColumn("steps/s", format="%.3g", help="steps / wall-clock seconds of the optimizer steps"),
                "hours": st.column_config.NumberColumn("hours (wall clock)", format="%.3g",
                                                       help="each logged step's seconds times the steps since the previous log row"),
            },
        )
else:
    st.info("No `train_log` rows yet; lineage below comes from the `checkpoints` table.")

st.subheader("Checkpoint lineage")
if checkpoints.empty:
    st.info("The `checkpoints` table is empty.")
    st.stop()
st.graphviz_chart(data.lineage_dot(checkpoints), width="stretch")
ck = checkpoints.sort_values("created_at", ascending=False)
st.dataframe(
    ck[["checkpoint_id", "parent", "step", "config_hash", "path", "created_at"]], hide_index=True, width="stretch",
    column_config={"step": st.column_config.NumberColumn(format="%d")},
)
chosen_ck = ui.pick("Configuration of", ck["checkpoint_id"].tolist(), key="tr_cfg")
row = ck[ck["checkpoint_id"] == chosen_ck].iloc[0]
parent = row["parent"] if isinstance(row["parent"], str) and row["parent"] else None
c1, c2 = st.columns(2)
with c1:
    try:
        st.json(json.loads(row["config"]) if row["config"] else {}, expanded=1)
    except (TypeError, ValueError):
        st.code(str(row["config"]))
with c2:
    if parent is None:
        st.caption("No parent: trained from the base model.")
    else:
        prow = checkpoints[checkpoints["checkpoint_id"] == parent]
        diff = data.config_diff(prow.iloc[0]["config"] if not prow.empty else None, row["config"])
        st.caption(f"Changed from parent `{parent}`" + ("" if not prow.empty else " (parent not in the table)"))
        if diff.empty:
            st.write("Same configuration as the parent (continued training).")
        else:
            st.dataframe(diff, hide_index=True, width="stretch")
