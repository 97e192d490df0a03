"""The metrics of a suite as markdown for a person (``draganything report``, the run's Prefect artifact).

One table per protocol. Column headers are short ("ObjMC px [1]"); the full identity of each
numbered column (tracker or backbone, sizes) is in the legend under the table, so numbers
measured differently are never in one column and a reader can still tell exactly what each is.
Rows are named "step 1000", "ref: warp", ... (``eval.display.short_names``), with the ids in
the legend too; numbers go through ``eval.display`` (significant digits, no zero-width interval).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.tables import Workdir
from eval.display import fmt_estimate, fmt_value, short_names

PAPER_PROTOCOL = "paper: pytorch-fid / TF I3D / CoTracker2"
PAPER_ROWS = [("DragNUWA (SVD)", 324.6, 39.8, 519.3), ("DragAnything (SVD)", 305.7, 33.5, 494.8)]
NAMES = {"objmc": "ObjMC px", "fid": "FID", "kid": "KID", "fvd": "FVD", "kvd": "KVD"}
ORDER = {"objmc": 0, "fid": 1, "kid": 2, "fvd": 3, "kvd": 4}


def cell(row) -> str:
    """'value [low – high]' (``eval.display``), or the value and why there is no interval (non-finite ends)."""
    lo, hi = row["ci_low"], row["ci_high"]
    if pd.notna(lo) and pd.notna(hi) and np.isfinite(lo) and np.isfinite(hi):
        n = int(row["n"]) if "n" in row and pd.notna(row["n"]) else None
        return fmt_estimate(row["value"], lo, hi, n=n)
    method = str(row.get("ci_method") or "")
    why = method.split("no interval, ", 1)[1] if "no interval, " in method else "no interval"
    return f"{fmt_value(row['value'])} ({why})"


def metrics_table(wd: Workdir, suite: str) -> str:
    """Markdown: per protocol a table sorted by its first ObjMC column, its legend, then the paper's rows."""
    metrics = wd.read("metrics")
    metrics = metrics[metrics["suite"] == suite]
    if metrics.empty:
        return f"no metrics for suite '{suite}' yet (run `draganything evaluate`)"
    ckpts = wd.read("checkpoints").set_index("checkpoint_id")
    names = short_names(metrics.sort_values("checkpoint_id")["checkpoint_id"])
    out = []
    for protocol, m in metrics.groupby("protocol", sort=True):
        cols = sorted({(r.metric, r.identity) for r in m.itertuples() if r.metric in NAMES}, key=lambda k: (ORDER[k[0]], k[1]))
        if not cols:
            continue
        head = [f"{NAMES[metric]} [{k + 1}]" for k, (metric, _) in enumerate(cols)]
        lines = [f"protocol: **{protocol}** (lower is better; 95% intervals)", "", "| checkpoint | step | " + " | ".join(head) + " |",
                 "|---|---|" + "---|" * len(cols)]
        first = m[(m["metric"] == cols[0][0]) & (m["identity"] == cols[0][1])]
        order = first.sort_values("value")["checkpoint_id"].tolist()
        for cid in order + sorted(set(m["checkpoint_id"]) - set(order)):
            cells = []
            for metric, identity in cols:
                r = m[(m["checkpoint_id"] == cid) & (m["metric"] == metric) & (m["identity"] == identity)]
                cells.append("" if r.empty else cell(r.iloc[0]))
            step = ckpts["step"].get(cid) if cid in ckpts.index else None
            lines.append(f"| {names[cid]} | {'' if step is None or pd.isna(step) else int(step)} | " + " | ".join(cells) + " |")
        lines += [""] + [f"[{k + 1}] {identity}" for k, (_, identity) in enumerate(cols)]
        out.append("\n".join(lines))
    legend = ["checkpoints:"] + [f"  {n} = {c}" for c, n in names.items() if n != c]
    pub = [f"published ({PAPER_PROTOCOL}; VIPSeg val, the paper's Table 1: reference only, not comparable with the tables above)", "",
           "| method | ObjMC px | FID | FVD |", "|---|---|---|---|"]
    pub += [f"| {name} | {o} | {fid} | {fvd} |" for name, o, fid, fvd in PAPER_ROWS]
    return "\n\n".join(out + (["\n".join(legend)] if len(legend) > 1 else []) + ["\n".join(pub)])
