"""Compare two checkpoints: metric deltas with intervals, per-item ObjMC, videos side by side."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard import data, media, queries, ui
from eval import catalog

st.title("Compare checkpoints")
url = ui.workdir_or_stop()

metrics = catalog.labelled(queries.read(url, "metrics"))  # identities as labels: one per identity
samples_idx = queries.read(url, "samples", columns=["checkpoint_id", "suite"])
if metrics.empty and samples_idx.empty:
    ui.empty("Nothing to compare yet: no metrics and no samples in this workdir.", "evaluate", url)
    st.stop()

checkpoints = queries.read(url, "checkpoints")
suites = sorted(set(metrics["suite"].dropna()) | set(samples_idx["suite"].dropna()))
suite = ui.pick("Suite", suites, key="cmp_suite")

have = set(metrics.loc[metrics["suite"] == suite, "checkpoint_id"]) | set(samples_idx.loc[samples_idx["suite"] == suite, "checkpoint_id"])
order = checkpoints.sort_values("created_at", ascending=False)["checkpoint_id"].tolist() if not checkpoints.empty else []
ids = [c for c in order if c in have] + sorted(have - set(order))
if len(ids) < 2:
    st.info(f"Suite {suite!r} has results for {len(ids)} checkpoint(s); a comparison needs two. Evaluate another checkpoint on it.")
    st.stop()

c1, c2 = st.columns(2)
with c1:
    a = ui.pick("Checkpoint A", ids, key="cmp_a", default=ids[1])
with c2:
    b = ui.pick("Checkpoint B", [i for i in ids if i != a], key="cmp_b", default=ids[0])

objmc = catalog.labelled(queries.read(
    url, "objmc", columns=["checkpoint_id", "item_id", "entity_id", "error_px", "per_frame", "identity", "seeds", "tracks", "video_height", "video_width"],
    filters=[("suite", "==", suite), ("checkpoint_id", "in", (a, b))],
), "objmc")

st.subheader("Metric deltas")
deltas = data.metric_deltas(metrics, suite, a, b, objmc)
if deltas.empty:
    st.info("These two checkpoints share no metric measured the same way (protocol, tracker or backbone, sizes) on this suite; deltas are only taken within one identity.")
else:
    st.dataframe(
        deltas, hide_index=True, width="stretch",
        column_config={k: st.column_config.NumberColumn(format="%.4g") for k in ("A", "B", "delta (B - A)")},
    )
    st.caption(
        "delta = B - A; lower is better for all three metrics, so a negative delta favours B. 'better' names a side only where "
        "the paired interval excludes 0: ObjMC, a paired bootstrap of the difference of the two flat means over their shared items; "
        "FID/FVD, a paired jackknife over the same items."
    )

identities = sorted(set(objmc["identity"])) if not objmc.empty else []
identity = ui.pick("ObjMC measured as", identities, key="cmp_identity") if len(identities) > 1 else (identities[0] if identities else None)
items = data.per_item_objmc(objmc, a, b, identity)

st.subheader("Per-item ObjMC")
if items.empty:
    st.info("No per-item ObjMC rows for both checkpoints on this suite (the `objmc` table is filled by the evaluate stage).")
    st.stop()

wins_b = int((items["diff"] < 0).sum())
m1, m2, m3 = st.columns(3)
m1.metric("items", len(items))
m2.metric("B better (lower error)", f"{wins_b} / {len(items)}")
m3.metric("mean error A -> B", f"{items['a'].mean():.1f} -> {items['b'].mean():.1f} px", delta=f"{items['diff'].mean():+.1f} px", delta_color="inverse")

plot = items.assign(better=np.where(items["diff"] < 0, "B", np.where(items["diff"] > 0, "A", "equal")))
hi = float(max(plot["a"].max(), plot["b"].max(), 1.0)) * 1.05
scatter = (
    alt.Chart(plot)
    .mark_circle(size=50, opacity=0.75)
    .encode(
        x=alt.X("a:Q", title=f"A: {a} (px)", scale=alt.Scale(domain=[0, hi])),
        y=alt.Y("b:Q", title=f"B: {b} (px)", scale=alt.Scale(domain=[0, hi])),
        color=alt.Color("better:N", title="lower error", scale=alt.Scale(domain=["A", "B", "equal"], range=["#e45756", "#4c78a8", "#999999"])),
        tooltip=["item_id", alt.Tooltip("a:Q", format=".1f"), alt.Tooltip("b:Q", format=".1f"), alt.Tooltip("diff:Q", format="+.1f")],
    )
)
diag = alt.Chart(pd.DataFrame({"x": [0, hi], "y": [0, hi]})).mark_line(color="#888", strokeDash=[4, 4]).encode(x="x:Q", y="y:Q")
st.altair_chart(scatter + diag, width="stretch")
st.caption("One dot per item: its flat-mean ObjMC error (over its entities' frames). Below the diagonal, B tracks the trajectory better.")

st.subheader("Where they differ most")
top = items.head(15).rename(columns={"a": "A error (px)", "b": "B error (px)", "diff": "B - A (px)"})
st.dataframe(top, hide_index=True, width="stretch", column_config={c: st.column_config.NumberColumn(format="%.1f") for c in top.columns if c != "item_id"})

item = ui.pick("Item to watch", items["item_id"].tolist()[:200], key="cmp_item")
samples = queries.read(
    url, "samples", columns=["checkpoint_id", "item_id", "seed", "video_path", "height", "width"],
    filters=[("suite", "==", suite), ("item_id", "==", item)],
)
conditions = queries.read(
    url, "conditions", columns=["checkpoint_id", "seed", "entity_ids", "trajectories", "visible", "radii", "height", "width", "notes", "ground_truth"],
    filters=[("suite", "==", suite), ("item_id", "==", item), ("checkpoint_id", "in", (a, b))],
)

wd = queries.get_workdir(url)
cols = st.columns(2)
for col, (side, ck) in zip(cols, (("A", a), ("B", b))):
    with col:
        st.markdown(f"**{side}: `{ck}`**")
        rows = samples[samples["checkpoint_id"] == ck].sort_values("seed")
        if rows.empty:
            st.info("No sample video of this item for this checkpoint.")
            continue
        r = rows.iloc[0]
        err = items.loc[items["item_id"] == item, "a" if side == "A" else "b"]
        caption = f"seed {int(r['seed'])}" + (f" · ObjMC {float(err.iloc[0]):.1f} px" if len(err) else "")
        cond = conditions[(conditions["checkpoint_id"] == ck) & (conditions["seed"] == r["seed"])]
        scored = objmc[(objmc["checkpoint_id"] == ck) & (objmc["item_id"] == item) & (objmc["identity"] == identity)]
        try:
            hw = (int(r["height"]), int(r["width"]))
            tracks = media.condition_tracks(cond.iloc[0], hw) if len(cond) else []
            tracks += media.stored_tracks(scored, int(r["seed"]), hw)
            path = media.display_video(wd, r["video_path"], media.display_size(hw), media.moving(tracks), tag="compare")
        except media.MediaError as e:
            st.error(str(e))
            continue
        ui.show_video(url, r["video_path"], path=path, caption=caption)
        if len(cond):
            for note in list(cond.iloc[0]["notes"] if cond.iloc[0]["notes"] is not None else []):
                st.caption(f"note: {note}")
        elif not len(cond):
            st.caption("No conditions recorded for this video (generated before they were stored): no target path to draw.")
st.caption(
    "Green: the trajectory the video was asked to follow (its conditions, frozen at generate time). Red: the track the "
    "evaluate stage measured, the one that produced the ObjMC number (stored, not re-tracked here)."
)
