"""Pure table transforms behind the pages (no Streamlit): leaderboard, deltas, lineage, labels lookup."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

METRICS = ("objmc", "fid", "fvd")
METRIC_LABELS = {"objmc": "ObjMC", "fid": "FID", "fvd": "FVD"}
LOWER_IS_BETTER = {"objmc": True, "fid": True, "fvd": True}

PAPER = "DragAnything (ECCV 2024), Table 1"
# The paper's numbers on VIPSeg val (256 x 256, 14 frames). Published, not re-measured:
# their FID/FVD backbones are pytorch-fid Inception and I3D (Kinetics-400).
PUBLISHED = pd.DataFrame(
    [
        {"checkpoint_id": "DragNUWA (SVD) [published]", "objmc": 324.6, "fvd": 519.3, "fid": 39.8, "note": PAPER},
        {"checkpoint_id": "DragAnything (SVD) [published]", "objmc": 305.7, "fvd": 494.8, "fid": 33.5, "note": PAPER},
    ]
)
PUBLISHED_ABLATION = pd.DataFrame(
    [
        {"variant": "no control representation", "objmc": 410.7, "fvd": 496.3, "fid": 34.2},
        {"variant": "entity representation only", "objmc": 318.4, "fvd": 494.5, "fid": 34.1},
        {"variant": "2D Gaussian only", "objmc": 339.3, "fvd": 495.3, "fid": 34.0},
        {"variant": "entity + 2D Gaussian", "objmc": 305.7, "fvd": 494.8, "fid": 33.5},
        {"variant": "entity + 2D Gaussian, loss mask off", "objmc": 311.1, "fvd": 500.2, "fid": 34.3},
    ]
)
PUBLISHED_USER_STUDY = pd.DataFrame(
    [
        {"aspect": "motion", "DragAnything": 0.63, "DragNUWA": 0.37},
        {"aspect": "quality", "DragAnything": 0.56, "DragNUWA": 0.44},
    ]
)


def published_applies(suite: str | None) -> bool:
    """The paper's rows describe VIPSeg val; show them beside suites of that data."""
    return bool(suite) and "vipseg" in suite.lower()


# ------------------------------------------------------------------ leaderboard


def backbone_options(metrics: pd.DataFrame, suite: str) -> dict[str, list[str]]:
    """Per metric, the backbones present on the suite, most checkpoints first."""
    out: dict[str, list[str]] = {}
    m = metrics[metrics["suite"] == suite]
    for metric in METRICS:
        sub = m[m["metric"] == metric]
        if sub.empty:
            continue
        counts = sub.groupby("backbone")["checkpoint_id"].nunique().sort_values(ascending=False, kind="stable")
        out[metric] = list(counts.index)
    return out


def config_backbone(config: Any) -> str | None:
    """The base model named in a checkpoint's config JSON ('model' section), if any."""
    if not isinstance(config, str) or not config:
        return None
    try:
        cfg = json.loads(config)
    except (TypeError, ValueError):
        return None
    model = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(model, dict):
        return None
    for key in ("backbone", "base", "name", "pretrained", "base_model"):
        v = model.get(key)
        if isinstance(v, str) and v:
            return v
    return None


def leaderboard(
    metrics: pd.DataFrame,
    checkpoints: pd.DataFrame,
    suite: str,
    backbones: Mapping[str, str],
    ratings: pd.DataFrame | None = None,
    sort_by: str = "objmc",
    ascending: bool | None = None,
) -> pd.DataFrame:
    """One row per checkpoint measured on ``suite``.

    ``backbones`` picks one backbone per metric: a column never mixes numbers from
    two backbones, so the ranking is always within one backbone. ``ratings`` (from
    :func:`eval.votes.bradley_terry_bootstrap`, with an ``aspect`` column) adds
    the human-vote ratings.
    """
    m = metrics[metrics["suite"] == suite]
    parts = []
    for metric in METRICS:
        bb = backbones.get(metric)
        sub = m[(m["metric"] == metric) & (m["backbone"] == bb)] if bb is not None else m.iloc[0:0]
        sub = sub.sort_values("created_at").drop_duplicates("checkpoint_id", keep="last")
        parts.append(
            sub.set_index("checkpoint_id")[["value", "ci_low", "ci_high", "n"]].rename(
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
        ascending = LOWER_IS_BETTER.get(sort_by, False) if not sort_by.startswith("human_") else False
    table = table.sort_values([sort_by, "checkpoint_id"], ascending=[ascending, True], na_position="last", ignore_index=True)
    table.insert(0, "rank", np.where(table[sort_by].notna(), table[sort_by].rank(method="min", ascending=ascending), np.nan))
    return table


def with_published(table: pd.DataFrame, suite: str) -> pd.DataFrame:
    """Append the paper's rows (no rank, marked published) when they apply to the suite."""
    table = table.copy()
    table["source"] = "measured"
    if not published_applies(suite):
        return table
    pub = PUBLISHED.drop(columns="note").assign(source=f"published ({PAPER})", rank=np.nan)
    return pd.concat([table, pub], ignore_index=True)


def fmt_ci(lo: Any, hi: Any, digits: int = 1) -> str:
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)) or (isinstance(hi, float) and math.isnan(hi)):
        return ""
    try:
        return f"{float(lo):.{digits}f} – {float(hi):.{digits}f}"
    except (TypeError, ValueError):
        return ""


# ---------------------------------------------------------------------- compare


def per_item_objmc(objmc: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Per item, the mean ObjMC error (over its entities) of a and of b, on items both have."""
    cols = ["item_id", "a", "b", "diff"]
    if objmc.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c != "item_id" else "object") for c in cols})
    g = objmc[objmc["checkpoint_id"].isin([a, b])].groupby(["checkpoint_id", "item_id"])["error_px"].mean().unstack(0)
    if a not in g.columns or b not in g.columns:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c != "item_id" else "object") for c in cols})
    g = g[[a, b]].dropna().rename(columns={a: "a", b: "b"})
    g["diff"] = g["b"] - g["a"]
    g.columns.name = None
    return g.reset_index().sort_values("diff", key=np.abs, ascending=False, ignore_index=True)


def paired_bootstrap(diff: np.ndarray, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of paired differences and its percentile bootstrap interval (items resampled)."""
    diff = np.asarray(diff, float)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
    means = diff[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(diff.mean()), float(lo), float(hi)


def metric_deltas(
    metrics: pd.DataFrame,
    suite: str,
    a: str,
    b: str,
    items: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per (metric, backbone) both checkpoints have: values, CIs, and delta = b - a with a CI.

    ObjMC's delta interval is a paired bootstrap over items when per-item errors are
    given (``items`` from :func:`per_item_objmc`); otherwise, and for FID/FVD (set
    level metrics), it combines the two intervals' half-widths in quadrature, an
    approximation that treats the two estimates as independent.
    """
    m = metrics[(metrics["suite"] == suite) & metrics["checkpoint_id"].isin([a, b])]
    m = m.sort_values("created_at").drop_duplicates(["checkpoint_id", "metric", "backbone"], keep="last")
    rows = []
    for (metric, backbone), sub in m.groupby(["metric", "backbone"], sort=True):
        ra = sub[sub["checkpoint_id"] == a]
        rb = sub[sub["checkpoint_id"] == b]
        if ra.empty or rb.empty:
            continue
        ra, rb = ra.iloc[0], rb.iloc[0]
        delta = rb["value"] - ra["value"]
        method = "intervals combined (independent)"
        if metric == "objmc" and items is not None and len(items) >= 2:
            mean, lo, hi = paired_bootstrap(items["diff"].to_numpy())
            # Centre on the table's delta; the bootstrap gives the spread of a paired difference.
            lo, hi = delta + (lo - mean), delta + (hi - mean)
            method = f"paired bootstrap over {len(items)} items"
        else:
            ha = (ra["ci_high"] - ra["ci_low"]) / 2 if pd.notna(ra["ci_high"]) and pd.notna(ra["ci_low"]) else np.nan
            hb = (rb["ci_high"] - rb["ci_low"]) / 2 if pd.notna(rb["ci_high"]) and pd.notna(rb["ci_low"]) else np.nan
            h = math.sqrt(ha * ha + hb * hb) if pd.notna(ha) and pd.notna(hb) else np.nan
            lo, hi = delta - h, delta + h
        better = "—"
        if pd.notna(lo) and pd.notna(hi):
            if hi < 0:
                better = "B" if LOWER_IS_BETTER.get(metric, True) else "A"
            elif lo > 0:
                better = "A" if LOWER_IS_BETTER.get(metric, True) else "B"
            else:
                better = "no clear difference"
        rows.append(
            {
                "metric": METRIC_LABELS.get(metric, metric),
                "backbone": backbone,
                "A": ra["value"],
                "A 95% CI": fmt_ci(ra["ci_low"], ra["ci_high"]),
                "B": rb["value"],
                "B 95% CI": fmt_ci(rb["ci_low"], rb["ci_high"]),
                "delta (B - A)": delta,
                "delta 95% CI": fmt_ci(lo, hi),
                "better": better,
                "interval": method,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------- labels


def suite_source(suite: str | None) -> tuple[str, str] | None:
    """(dataset, split) a labels-based suite is built from, per the generate stage's registry."""
    if not suite:
        return None
    try:
        from tasks.suites import SUITES
    except Exception:  # noqa: BLE001 - the registry is optional for the dashboard
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
        for (ds, sp), g in groups:
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
