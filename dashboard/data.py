"""Pure table transforms behind the pages (no Streamlit): leaderboard, deltas, lineage, labels lookup."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.suites import SUITES
from eval import catalog
from eval.display import fmt_interval

METRICS = tuple(catalog.METRICS)
METRIC_LABELS = {k: m.display for k, m in catalog.METRICS.items()}
PAPER, PAPER_PROTOCOL = catalog.PAPER, catalog.PAPER_PROTOCOL
# The paper's numbers, as published: their own protocol label, their own table, never ranked with ours.
PUBLISHED = pd.DataFrame([{**r, "protocol": PAPER_PROTOCOL, "source": PAPER} for r in catalog.PAPER_ROWS])
PUBLISHED_ABLATION = pd.DataFrame(list(catalog.PAPER_ABLATION))
PUBLISHED_USER_STUDY = pd.DataFrame(
    [
        {"aspect": "motion", "DragAnything": 0.63, "DragNUWA": 0.37},
        {"aspect": "quality", "DragAnything": 0.56, "DragNUWA": 0.44},
    ]
)


# ------------------------------------------------------------------ leaderboard


def identity_options(metrics: pd.DataFrame, suite: str) -> dict[str, list[str]]:
    """Per metric, the identities (protocol, tracker or backbone, sizes) present on the suite, most checkpoints first."""
    out: dict[str, list[str]] = {}
    m = metrics[metrics["suite"] == suite]
    for metric in METRICS:
        sub = m[m["metric"] == metric]
        if sub.empty:
            continue
        counts = sub.groupby("identity")["checkpoint_id"].nunique().sort_values(ascending=False, kind="stable")
        out[metric] = list(counts.index)
    return out


def config_backbone(config: Any) -> str | None:
    """The base model a checkpoint's config (``Config`` JSON) builds on, with its size, e.g.
    'embedded tiny model, 8 frames at 64x64'; a reference generator's name."""
    if not isinstance(config, str) or not config:
        return None
    try:
        cfg = json.loads(config)
    except (TypeError, ValueError):
        return None
    if isinstance(cfg, dict) and "generator" in cfg:
        return f"reference: {cfg['generator']}"
    model = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(model, dict):
        return None
    path = model.get("base_model_path")
    base = str(path).rstrip("/").rsplit("/", 1)[-1] if path else "embedded tiny model"
    return f"{base}, {model.get('num_frames')} frames at {model.get('height')}x{model.get('width')}"


def leaderboard(
    metrics: pd.DataFrame,
    checkpoints: pd.DataFrame,
    suite: str,
    identities: Mapping[str, str],
    ratings: pd.DataFrame | None = None,
    sort_by: str = "objmc",
    ascending: bool | None = None,
    objmc: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per checkpoint measured on ``suite``.

    ``identities`` picks one identity per metric: a column never mixes numbers measured
    differently (protocol, tracker, backbone, sizes), so the ranking is within one identity.
    ``ratings`` (from :func:`eval.votes.bradley_terry_bootstrap`, with an ``aspect`` column)
    adds the human-vote ratings. ``vs_next`` says whether each row is better than the next
    one on the sort metric by a paired interval on their shared items (``objmc`` rows for
    ObjMC, stored jackknife replicates for FID/FVD), and only then.
    """
    m = metrics[metrics["suite"] == suite]
    parts, picked = [], {}
    for metric in METRICS:
        ident = identities.get(metric)
        sub = m[(m["metric"] == metric) & (m["identity"] == ident)] if ident is not None else m.iloc[0:0]
        sub = sub.sort_values("created_at").drop_duplicates("checkpoint_id", keep="last")
        picked[metric] = sub.set_index("checkpoint_id")
        parts.append(
            picked[metric][["value", "ci_low", "ci_high", "n"]].rename(
                columns={"value": metric, "ci_low": f"{metric}_ci_low", "ci_high": f"{metric}_ci_high", "n": f"{metric}_n"}
            )
        )
    table = pd.concat(parts, axis=1) if parts else pd.DataFrame()
    if table.empty:
        return table
    table.index.name = "checkpoint_id"
    table = table.reset_index()
    if not checkpoints.empty:
        ck = checkpoints[["checkpoint_id", "parent", "step", "created_at", "config"]].copy()
        ck["model"] = ck["config"].map(config_backbone)
        table = table.merge(ck.drop(columns="config"), on="checkpoint_id", how="left")
    else:
        for c in ("parent", "step", "created_at", "model"):
            table[c] = None
    if ratings is not None and not ratings.empty:
        for aspect in ("motion", "quality"):
            r = ratings[ratings["aspect"] == aspect][["checkpoint_id", "rating", "ci_low", "ci_high", "n"]]
            r = r.rename(columns={"rating": f"human_{aspect}", "ci_low": f"human_{aspect}_ci_low", "ci_high": f"human_{aspect}_ci_high", "n": f"human_{aspect}_n"})
            table = table.merge(r, on="checkpoint_id", how="left")
    if sort_by not in table.columns:
        sort_by = next((x for x in METRICS if x in table.columns and table[x].notna().any()), "checkpoint_id")
    if ascending is None:
        ascending = catalog.METRICS[sort_by].lower_is_better if sort_by in catalog.METRICS else False
    table = table.sort_values([sort_by, "checkpoint_id"], ascending=[ascending, True], na_position="last", ignore_index=True)
    table.insert(0, "rank", np.where(table[sort_by].notna(), table[sort_by].rank(method="min", ascending=ascending), np.nan))
    table["vs_next"] = ""
    if sort_by in METRICS:
        ids = table["checkpoint_id"].tolist()
        for i in range(len(ids) - 1):
            if pd.isna(table.loc[i, sort_by]) or pd.isna(table.loc[i + 1, sort_by]):
                continue
            ci, how = paired_interval(sort_by, picked[sort_by], objmc, ids[i], ids[i + 1], identities.get(sort_by))
            table.loc[i, "vs_next"] = verdict(ci, sort_by, "better than next", "worse than next", how)
    return table


def verdict(ci, metric: str, better: str, worse: str, how: str) -> str:
    """'better' / 'worse' only where the paired interval of (this - other) excludes 0 (``eval.catalog.verdict``); otherwise why not."""
    if ci is None or not np.isfinite(ci.low) or not np.isfinite(ci.high):
        return f"no paired interval ({how})"
    return {catalog.BETTER: better, catalog.WORSE: worse}.get(catalog.verdict(ci, metric), "no clear difference")


def paired_interval(metric: str, rows: pd.DataFrame, objmc: pd.DataFrame | None, a: str, b: str, identity: str | None, confidence: float = 0.95):
    """(Interval of a - b on the items both have, how it was made) or (None, why there is none): ``eval.catalog.compare``."""
    if a not in rows.index or b not in rows.index:
        return None, "missing row"
    sa, sb = scored(metric, rows.loc[a], objmc, a, identity), scored(metric, rows.loc[b], objmc, b, identity)
    return catalog.compare(metric, sa, sb, confidence)


def scored(metric: str, row: pd.Series, objmc: pd.DataFrame | None, cid: str, identity: str | None) -> catalog.Scored:
    """What the catalogue's paired comparison reads for one checkpoint's metric row (labelled identities)."""
    items = None
    if metric == "objmc" and objmc is not None and not objmc.empty:
        o = objmc[(objmc["checkpoint_id"] == cid) & (objmc["identity"] == identity)]
        items = catalog.item_totals(o) if len(o) else None
    reps = row.get("replicates")
    return catalog.Scored(cid, float(row["value"]), int(row["n"]) if pd.notna(row.get("n")) else 0, items=items,
                          replicates=tuple(reps) if reps is not None and len(reps) else (), items_digest=row.get("items_digest"))


def published_table() -> pd.DataFrame:
    """The paper's rows as published, with their own protocol label (never our identities)."""
    return PUBLISHED.rename(columns=METRIC_LABELS)


# ---------------------------------------------------------------------- compare


def per_item_objmc(objmc: pd.DataFrame, a: str, b: str, identity: str | None = None) -> pd.DataFrame:
    """Per item, the flat-mean ObjMC error (over its entities' frames) of a and of b, on items both have."""
    cols = ["item_id", "a", "b", "diff"]
    empty = pd.DataFrame({c: pd.Series(dtype="float64" if c != "item_id" else "object") for c in cols})
    if objmc.empty:
        return empty
    o = objmc[objmc["identity"] == identity] if identity is not None and "identity" in objmc else objmc
    ta, tb = catalog.item_totals(o[o["checkpoint_id"] == a]), catalog.item_totals(o[o["checkpoint_id"] == b])
    shared = ta.index.intersection(tb.index)
    if not len(shared):
        return empty
    g = pd.DataFrame({"a": ta.loc[shared, "total"] / ta.loc[shared, "count"], "b": tb.loc[shared, "total"] / tb.loc[shared, "count"]})
    g["diff"] = g["b"] - g["a"]
    return g.rename_axis("item_id").reset_index().sort_values("diff", key=np.abs, ascending=False, ignore_index=True)


def metric_deltas(metrics: pd.DataFrame, suite: str, a: str, b: str, objmc: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (metric, identity) both checkpoints have: values, intervals, delta = b - a with a paired interval.

    ObjMC: paired bootstrap of the difference of the two flat means over their shared items.
    FID/FVD: paired jackknife from the stored leave-group-out values, when both were measured
    on the same items. 'better' names a side only where that interval excludes 0.
    """
    m = metrics[(metrics["suite"] == suite) & metrics["checkpoint_id"].isin([a, b])]
    m = m.sort_values("created_at").drop_duplicates(["checkpoint_id", "metric", "identity"], keep="last")
    rows = []
    for (metric, identity), sub in m.groupby(["metric", "identity"], sort=True):
        if metric not in METRICS or set(sub["checkpoint_id"]) != {a, b}:
            continue
        by = sub.set_index("checkpoint_id")
        ra, rb = by.loc[a], by.loc[b]
        ci, how = paired_interval(metric, by, objmc, b, a, identity)
        delta = float(rb["value"] - ra["value"]) if ci is None else float(ci.value)
        rows.append(
            {
                "metric": METRIC_LABELS.get(metric, metric),
                "identity": identity,
                "A": ra["value"],
                "A 95% CI": fmt_interval(ra["ci_low"], ra["ci_high"]),
                "B": rb["value"],
                "B 95% CI": fmt_interval(rb["ci_low"], rb["ci_high"]),
                "delta (B - A)": delta,
                "delta 95% CI": "" if ci is None else fmt_interval(ci.low, ci.high, sign=True),
                "better": verdict(ci, metric, "B", "A", how),
                "interval": how,
            }
        )
    return pd.DataFrame(rows)


def metric_changes(history: pd.DataFrame, suite: str) -> pd.DataFrame:
    """Metrics whose value changed: the current value beside the one before it (n, when), newest first."""
    cols = ["checkpoint_id", "metric", "identity", "value", "n", "updated", "before", "n_before", "computed_before"]
    if history.empty:
        return pd.DataFrame(columns=cols)
    h = history[history["suite"] == suite].sort_values("created_at")
    rows = []
    for key, g in h.groupby(["checkpoint_id", "metric", "identity"], sort=False):
        if len(g) < 2:
            continue
        cur, prev = g.iloc[-1], g.iloc[-2]
        if cur["value"] == prev["value"] and cur["n"] == prev["n"]:
            continue
        rows.append(dict(zip(cols, [*key, cur["value"], int(cur["n"]), cur["created_at"], prev["value"], int(prev["n"]), prev["created_at"]])))
    if not rows:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(rows, columns=cols).sort_values("updated", ascending=False, ignore_index=True)


# --------------------------------------------------------------------- labels


def suite_source(suite: str | None) -> tuple[str, str] | None:
    """(dataset, split) a labels-based suite is built from, per the generate stage's registry."""
    if not suite:
        return None
    spec = SUITES.get(suite)
    if spec is None or spec.dataset is None or spec.split is None:
        return None
    return str(spec.dataset), str(spec.split)


def resolve_labels(labels: pd.DataFrame, item_id: str, suite: str | None = None) -> pd.DataFrame:
    """The label rows (one per entity) of a suite item.

    Item ids are matched to labels as ``video_id``, ``dataset/split/video_id`` or a
    path ending in ``/video_id`` (or ``:video_id``). When several datasets/splits
    hold the video, the one named in the suite (e.g. 'vipseg-val') wins.
    """
    if labels.empty or not item_id:
        return labels.iloc[0:0]
    key = labels["dataset"].astype(str) + "/" + labels["split"].astype(str) + "/" + labels["video_id"].astype(str)
    hit = labels[key == item_id]
    if hit.empty:
        hit = labels[labels["video_id"] == item_id]
    if hit.empty:
        tail = item_id.replace(":", "/").rstrip("/").rsplit("/", 1)[-1]
        hit = labels[labels["video_id"] == tail]
    if hit.empty:
        return hit
    groups = hit.groupby(["dataset", "split"], sort=True)
    spec = suite_source(suite)
    if len(groups) > 1 and spec is not None:
        for (ds, sp), g in groups:
            if (ds, sp) == spec:
                return g
    if len(groups) > 1 and suite:
        bm = suite.lower()
        for (ds, sp), g in groups:
            if str(ds).lower() in bm and str(sp).lower() in bm:
                return g
        for (_, sp), g in groups:
            if str(sp).lower() in bm:
                return g
    return next(iter(groups))[1]


# ------------------------------------------------------------------- training


def lineage_dot(checkpoints: pd.DataFrame, highlight: set[str] | None = None, limit: int = 300) -> str:
    """Graphviz DOT of the checkpoint tree (parent -> child), newest ``limit`` checkpoints."""
    highlight = highlight or set()
    ck = checkpoints.sort_values("created_at").tail(limit)
    ids = set(ck["checkpoint_id"])

    def q(s: str) -> str:
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph lineage {", '  rankdir="LR";', '  node [shape=box, style="rounded,filled", fillcolor="#f4f4f8", fontsize=10];']
    for r in ck.itertuples(index=False):
        step = "" if pd.isna(r.step) else f"\\nstep {int(r.step)}"
        fill = ', fillcolor="#ffd9a8"' if r.checkpoint_id in highlight else ""
        lines.append(f"  {q(r.checkpoint_id)} [label={q(str(r.checkpoint_id))[:-1]}{step}\"{fill}];")
    for r in ck.itertuples(index=False):
        if isinstance(r.parent, str) and r.parent:
            if r.parent not in ids:
                lines.append(f"  {q(r.parent)} [style=dashed];")
            lines.append(f"  {q(r.parent)} -> {q(r.checkpoint_id)};")
    lines.append("}")
    return "\n".join(lines)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def config_diff(parent_config: str | None, config: str | None) -> pd.DataFrame:
    """Keys whose value differs between two config JSON strings (dotted keys)."""
    def load(s: str | None) -> dict:
        try:
            v = json.loads(s) if s else {}
            return v if isinstance(v, dict) else {}
        except (TypeError, ValueError):
            return {}

    a, b = _flatten(load(parent_config)), _flatten(load(config))
    rows = [
        {"key": k, "parent": json.dumps(a.get(k)) if k in a else "(absent)", "this": json.dumps(b.get(k)) if k in b else "(absent)"}
        for k in sorted(set(a) | set(b))
        if a.get(k, object()) != b.get(k, object())
    ]
    return pd.DataFrame(rows, columns=["key", "parent", "this"])


def smooth(values: pd.Series, alpha: float) -> pd.Series:
    """Exponential moving average (alpha = 0: no smoothing)."""
    if alpha <= 0:
        return values
    return values.ewm(alpha=1 - alpha, adjust=False).mean()
