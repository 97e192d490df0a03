"""What a workdir holds, as a person wants to see it before a run."""

from __future__ import annotations

import numpy as np
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
                "metrics": {f"{r.suite}/{r.metric}[{r.protocol}]": round(float(r.value), 3) for r in m.itertuples()},
            }
        )
    out["checkpoints"] = rows
    out["without_metrics"] = [r["checkpoint"] for r in rows if not r["metrics"]]
    out["rejects"] = {
        stage: {"count": len(g), "latest": [f"{r.item}: {r.reason}" for r in g.tail(3).itertuples()]}
        for stage, g in rejects.groupby("stage")
    }
    out["damaged_parts"] = {t: parts for t in TABLES if (parts := wd.damaged_parts(t))}
    out["quarantined_parts"] = {t: parts for t in TABLES if (parts := wd.quarantined_parts(t))}
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
        lines.append(f"damaged parts of table {table} (skipped; the next write moves them to _quarantine/, a re-run "
                     "writes their rows again):")
        lines += [f"  {p}" for p in parts]
    for table, parts in st.get("quarantined_parts", {}).items():
        lines.append(f"quarantined parts of table {table} (not read; inspect or delete them, a re-run writes their rows again):")
        lines += [f"  {p}: {why}" for p, why in parts.items()]
    return "\n".join(lines)


PAPER_PROTOCOL = "paper: pytorch-fid / TF I3D / CoTracker2"
PAPER_ROWS = [("DragNUWA (SVD)", 324.6, 39.8, 519.3), ("DragAnything (SVD)", 305.7, 33.5, 494.8)]


def _value_and_interval(row) -> str:
    """'value [low, high]', or the value and why there is no interval (non-finite ends)."""
    lo, hi = row["ci_low"], row["ci_high"]
    if pd.notna(lo) and pd.notna(hi) and np.isfinite(lo) and np.isfinite(hi):
        return f"{row['value']:.3g} [{lo:.3g}, {hi:.3g}]"
    method = str(row.get("ci_method") or "")
    why = method.split("no interval, ", 1)[1] if "no interval, " in method else "no interval"
    return f"{row['value']:.3g} ({why})"


def metrics_table(wd: Workdir, suite: str) -> str:
    """Markdown: one table per protocol (what the README shows), then the paper's rows under their own protocol.

    A column holds one metric of one identity (tracker or backbone, sizes): numbers measured
    differently are never in one column, and each table is sorted by its first ObjMC column only.
    """
    metrics = wd.read("metrics")
    metrics = metrics[metrics["suite"] == suite]
    if metrics.empty:
        return f"no metrics for suite '{suite}' yet (run `draganything evaluate`)"
    ckpts = wd.read("checkpoints").set_index("checkpoint_id")
    names = {"objmc": "ObjMC px", "fid": "FID", "kid": "KID", "fvd": "FVD", "kvd": "KVD"}
    order_of = {"objmc": 0, "fid": 1, "kid": 2, "fvd": 3, "kvd": 4}
    out = []
    for protocol, m in metrics.groupby("protocol", sort=True):
        cols = sorted({(r.metric, r.identity) for r in m.itertuples() if r.metric in names}, key=lambda k: (order_of[k[0]], k[1]))
        if not cols:
            continue
        head = [f"{names[metric]} ({identity.split(' | ', 1)[-1]})" for metric, identity in cols]
        lines = [f"protocol: **{protocol}**", "", "| checkpoint | step | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(cols)]
        first = m[(m["metric"] == cols[0][0]) & (m["identity"] == cols[0][1])]
        order = first.sort_values("value")["checkpoint_id"].tolist()
        for cid in order + sorted(set(m["checkpoint_id"]) - set(order)):
            cells = []
            for metric, identity in cols:
                r = m[(m["checkpoint_id"] == cid) & (m["metric"] == metric) & (m["identity"] == identity)]
                cells.append("" if r.empty else _value_and_interval(r.iloc[0]))
            step = ckpts["step"].get(cid) if cid in ckpts.index else None
            lines.append(f"| {cid} | {'' if step is None or pd.isna(step) else int(step)} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    pub = [f"published ({PAPER_PROTOCOL}; VIPSeg val, the paper's Table 1: reference only, not comparable with the tables above)", "",
           "| method | ObjMC px | FID | FVD |", "|---|---|---|---|"]
    pub += [f"| {name} | {o} | {fid} | {fvd} |" for name, o, fid, fvd in PAPER_ROWS]
    return "\n\n".join(out + ["\n".join(pub)])
