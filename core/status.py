"""What a workdir holds, as a person wants to see it before a run."""

from __future__ import annotations

import pandas as pd

from core.tables import TABLES, Workdir


def workdir_status(wd: Workdir) -> dict:
    labels = wd.read("labels", columns=["dataset", "split", "video_id", "entity_id"])
    ckpts = wd.read("checkpoints").sort_values("created_at")
    metrics = wd.read("metrics")
    samples = wd.read("samples", columns=["checkpoint_id", "suite", "item_id"])
    rejects = wd.read("rejects").sort_values("at")
    out: dict = {"workdir": wd.url}
    out["labels"] = [
        {"dataset": d, "split": s, "videos": int(g["video_id"].nunique()), "entities": len(g)}
        for (d, s), g in labels.groupby(["dataset", "split"], sort=True)
    ]
    rows = []
    for c in ckpts.itertuples():
        m = metrics[metrics["checkpoint_id"] == c.checkpoint_id]
        s = samples[samples["checkpoint_id"] == c.checkpoint_id]
        rows.append(
            {
                "checkpoint": c.checkpoint_id,
                "step": int(c.step) if pd.notna(c.step) else None,
                "parent": c.parent,
                "samples": {b: int(g["item_id"].nunique()) for b, g in s.groupby("suite")},
                "metrics": {f"{r.suite}/{r.metric}": round(float(r.value), 3) for r in m.itertuples()},
            }
        )
    out["checkpoints"] = rows
    out["without_metrics"] = [r["checkpoint"] for r in rows if not r["metrics"]]
    out["rejects"] = {
        stage: {"count": len(g), "latest": [f"{r.item}: {r.reason}" for r in g.tail(3).itertuples()]}
        for stage, g in rejects.groupby("stage")
    }
    out["damaged_parts"] = {t: parts for t in TABLES if (parts := wd.damaged_parts(t))}
    return out


def format_status(st: dict) -> str:
    lines = [f"workdir {st['workdir']}"]
    lines.append("labels:" if st["labels"] else "labels: none yet (run `draganything labels`)")
    lines += [f"  {x['dataset']}/{x['split']}: {x['videos']} videos, {x['entities']} entities" for x in st["labels"]]
    lines.append("checkpoints:" if st["checkpoints"] else "checkpoints: none yet (run `draganything train`)")
    for c in st["checkpoints"]:
        metrics = ", ".join(f"{k}={v}" for k, v in c["metrics"].items()) or "no metrics yet"
        samples = ", ".join(f"{b}: {n} items" for b, n in c["samples"].items()) or "no samples"
        lines.append(f"  {c['checkpoint']} (step {c['step']}): {samples}; {metrics}")
    if st["rejects"]:
        lines.append("open rejects:")
        for stage, r in st["rejects"].items():
            lines.append(f"  {stage}: {r['count']}")
            lines += [f"    {x}" for x in r["latest"]]
    else:
        lines.append("open rejects: none")
    for table, parts in st.get("damaged_parts", {}).items():
        lines.append(f"damaged parts of table {table} (skipped; move them out, a re-run writes their rows again):")
        lines += [f"  {p}" for p in parts]
    return "\n".join(lines)


def metrics_table(wd: Workdir, suite: str) -> str:
    """A markdown table of every checkpoint's metrics on one suite (what the README shows)."""
    metrics = wd.read("metrics")
    metrics = metrics[metrics["suite"] == suite]
    if metrics.empty:
        return f"no metrics for suite '{suite}' yet (run `draganything evaluate`)"
    ckpts = wd.read("checkpoints").set_index("checkpoint_id")
    names = {"objmc": "ObjMC px", "fid": "FID", "fvd": "FVD"}
    cols = [m for m in ("objmc", "fid", "fvd") if m in set(metrics["metric"])]
    backbones = {m: ", ".join(sorted(set(metrics.loc[metrics["metric"] == m, "backbone"]))) for m in cols}
    lines = [
        "| checkpoint | step | " + " | ".join(f"{names[m]} ({backbones[m]})" for m in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    order = metrics[metrics["metric"] == cols[0]].sort_values("value")["checkpoint_id"].tolist()
    for cid in order + sorted(set(metrics["checkpoint_id"]) - set(order)):
        cells = []
        for m in cols:
            r = metrics[(metrics["checkpoint_id"] == cid) & (metrics["metric"] == m)]
            cells.append("" if r.empty else f"{r['value'].iloc[0]:.3g} [{r['ci_low'].iloc[0]:.3g}, {r['ci_high'].iloc[0]:.3g}]")
        step = ckpts["step"].get(cid) if cid in ckpts.index else None
        lines.append(f"| {cid} | {'' if step is None or pd.isna(step) else int(step)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
