"""The dashboard's charts: the tables they draw (plain pandas) and their Altair specs.

Every chart names checkpoints by their short display names (``eval.display.short_names``),
with the full id in the tooltip, and has a plot area of at least :data:`MIN_PLOT_PX` pixels.
"""

from __future__ import annotations

import re

import altair as alt
import numpy as np
import pandas as pd

from core.checkpoints import REFERENCE, TRAINED, classify
from eval.display import short_names

MIN_PLOT_PX = 240
ROW_PX = 34  # per checkpoint on a categorical axis
_STEP = re.compile(r"-s\d+$")


def run_of(checkpoint_id: str) -> str:
    """The run a checkpoint belongs to (``run-x-s001000`` -> ``run-x``)."""
    return _STEP.sub("", checkpoint_id)


# ---------------------------------------------------------------------- training


def training_runs(log: pd.DataFrame) -> pd.DataFrame:
    """``train_log`` rows with their run: one curve per run, not one per checkpoint the rows led up to."""
    out = log.assign(run=log["checkpoint_id"].map(run_of)).sort_values(["run", "step"], kind="stable")
    return out.drop_duplicates(["run", "step"], keep="last")


def training_summary(log: pd.DataFrame) -> pd.DataFrame:
    """Per run: steps, losses, steps/s and wall-clock hours of its optimizer steps.

    ``train_log`` keeps every ``log_every``-th step with that step's duration, so a row stands for
    the steps since the row before it: hours = sum(seconds x steps covered) / 3600 (summing only the
    logged steps' seconds undercounts by the factor ``log_every``).
    """
    runs = training_runs(log)
    rows = []
    for run, g in runs.groupby("run", sort=False):
        covered = g["step"].diff().fillna(g["step"].iloc[0]).clip(lower=1)
        seconds = float((g["seconds"] * covered).sum())
        steps = int(g["step"].max())
        rows.append({"run": run, "steps": steps, "last_loss": float(g["loss"].iloc[-1]), "min_loss": float(g["loss"].min()),
                     "steps_per_s": steps / seconds if seconds > 0 else np.nan, "hours": seconds / 3600.0})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- leaderboard


def metric_curves(metrics: pd.DataFrame, checkpoints: pd.DataFrame, suite: str, metric: str, identity: str) -> pd.DataFrame:
    """One metric of one identity on a suite, per checkpoint: value, interval, step, run, kind, short name."""
    m = metrics[(metrics["suite"] == suite) & (metrics["metric"] == metric) & (metrics["identity"] == identity)]
    m = m.sort_values("created_at").drop_duplicates("checkpoint_id", keep="last")
    if m.empty:
        return pd.DataFrame(columns=["checkpoint_id", "name", "run", "kind", "step", "value", "ci_low", "ci_high"])
    kinds = classify(checkpoints).set_index("checkpoint_id") if not checkpoints.empty else pd.DataFrame(columns=["kind", "step"])
    names = short_names(m["checkpoint_id"])
    out = m[["checkpoint_id", "value", "ci_low", "ci_high"]].copy()
    out["kind"] = [kinds["kind"].get(c, TRAINED if _STEP.search(c) else REFERENCE) if c in kinds.index else
                   (TRAINED if _STEP.search(c) else REFERENCE) for c in out["checkpoint_id"]]
    out["step"] = [int(kinds["step"].get(c)) if c in kinds.index and pd.notna(kinds["step"].get(c)) else 0 for c in out["checkpoint_id"]]
    out["run"] = [run_of(c.removesuffix("~nocontrol")) + (" · control off" if c.endswith("~nocontrol") else "") for c in out["checkpoint_id"]]
    out["name"] = out["checkpoint_id"].map(names)
    return out.reset_index(drop=True)


def metric_vs_step(curves: pd.DataFrame, label: str) -> alt.Chart:
    """Lines per run over step with the 95% interval as a band; references as dashed horizontal rules."""
    runs = curves[curves["kind"] != REFERENCE]
    refs = curves[curves["kind"] == REFERENCE]
    tip = [alt.Tooltip("name:N", title="checkpoint"), alt.Tooltip("checkpoint_id:N", title="id"), "step:Q",
           alt.Tooltip("value:Q", format=".4g"), alt.Tooltip("ci_low:Q", format=".4g"), alt.Tooltip("ci_high:Q", format=".4g")]
    short = {r: (f"run {r[4:8]}" + (" · control off" if r.endswith("control off") else "")) if r.startswith("run-") else r
             for r in runs["run"].unique()}
    runs = runs.assign(line=runs["run"].map(short))
    y = alt.Y("value:Q", title=f"{label} (lower is better)", scale=alt.Scale(zero=False))
    color = alt.Color("line:N", title="run")
    base = alt.Chart(runs).encode(x=alt.X("step:Q", title="training step"))
    band = base.mark_area(opacity=0.18).encode(y=alt.Y("ci_low:Q", title=None), y2="ci_high:Q", color=color)
    lines = base.mark_line(point=True).encode(y=y, color=color, tooltip=tip)
    layers = [band, lines]
    if not refs.empty:
        rule = alt.Chart(refs).mark_rule(strokeDash=[6, 4], color="gray").encode(y="value:Q", tooltip=tip)
        text = alt.Chart(refs).mark_text(align="left", dx=4, dy=-6, color="gray").encode(y="value:Q", x=alt.value(0), text="name:N")
        layers += [rule, text]
    return alt.layer(*layers).properties(height=MIN_PLOT_PX + 40)


# ---------------------------------------------------------------------- study results


def forest(bt: pd.DataFrame) -> alt.Chart:
    """Bradley-Terry ratings as a forest plot: one row per checkpoint (short names), a point and its interval per aspect."""
    names = short_names(bt["checkpoint_id"])
    d = bt.assign(name=bt["checkpoint_id"].map(names))
    order = d.groupby("name")["rating"].mean().sort_values(ascending=False).index.tolist()
    y = alt.Y("name:N", sort=order, title=None, axis=alt.Axis(labelLimit=260))
    off = alt.YOffset("aspect:N")
    tip = [alt.Tooltip("name:N", title="checkpoint"), alt.Tooltip("checkpoint_id:N", title="id"), "aspect:N",
           alt.Tooltip("rating:Q", format=".0f"), alt.Tooltip("ci_low:Q", format=".0f"), alt.Tooltip("ci_high:Q", format=".0f"), "n:Q"]
    rules = alt.Chart(d).mark_rule(strokeWidth=2).encode(
        y=y, yOffset=off, x=alt.X("ci_low:Q", title="rating (Elo scale, mean 1000), 95% interval", scale=alt.Scale(zero=False)),
        x2="ci_high:Q", color="aspect:N", tooltip=tip)
    points = alt.Chart(d).mark_point(filled=True, size=70).encode(y=y, yOffset=off, x="rating:Q", color="aspect:N", tooltip=tip)
    mean = alt.Chart(pd.DataFrame({"x": [1000.0]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    return (rules + points + mean).properties(height=max(MIN_PLOT_PX, ROW_PX * 2 * len(order)))


def coverage(cov: pd.DataFrame) -> alt.Chart:
    """Judgements per pair as a heatmap sized to its content (short names, horizontal labels, counts in the cells)."""
    names = short_names(pd.concat([cov["checkpoint_a"], cov["checkpoint_b"]]))
    d = cov.assign(a=cov["checkpoint_a"].map(names), b=cov["checkpoint_b"].map(names))
    n_a, n_b = d["a"].nunique(), d["b"].nunique()
    side = max(ROW_PX + 6, MIN_PLOT_PX // max(1, n_b))
    x = alt.X("a:N", title=None, axis=alt.Axis(labelAngle=0, labelLimit=160, orient="top"))
    y = alt.Y("b:N", title=None, axis=alt.Axis(labelLimit=200))
    tip = [alt.Tooltip("checkpoint_a:N", title="A"), alt.Tooltip("checkpoint_b:N", title="B"), "n:Q"]
    rect = alt.Chart(d).mark_rect().encode(x=x, y=y, color=alt.Color("n:Q", title="judgements"), tooltip=tip)
    text = alt.Chart(d).mark_text(fontSize=13).encode(x=x, y=y, text="n:Q")
    return (rect + text).properties(height=max(MIN_PLOT_PX, side * n_b), width=max(160 * n_a, MIN_PLOT_PX))
