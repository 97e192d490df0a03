"""The metrics of a suite as markdown for a person (``draganything report``, the run's Prefect artifact).

One table per protocol. Column headers are short ("ObjMC px [1]"); the full identity of each
numbered column (tracker or backbone, sizes) is in the legend under the table, so numbers
measured differently are never in one column and a reader can still tell exactly what each is.
Rows are named "step 1000", "ref: warp", ... (``eval.display.short_names``), with the ids in
the legend too; numbers go through ``eval.display`` (significant digits, no zero-width interval);
which metrics there are and how their identities read is ``eval.catalog``'s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.tables import Workdir
from eval.catalog import METRICS, PAPER_PROTOCOL, PAPER_ROWS, identities_of, ordered
from eval.display import fmt_estimate, fmt_value, short_names


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
    """Markdown: per protocol a table sorted by its first ObjMC column, its legend, then the paper's rows.

    A column holds one metric of one identity (``eval.catalog``): numbers measured differently are
    never in one column.
    """
    metrics = wd.read("metrics")
    metrics = metrics[(metrics["suite"] == suite) & metrics["metric"].isin(list(METRICS))]
    if metrics.empty:
        return f"no metrics for suite '{suite}' yet (run `draganything evaluate`)"
    metrics = metrics.sort_values("created_at").assign(_identity=identities_of(metrics))
    ckpts = wd.read("checkpoints").set_index("checkpoint_id")
    names = short_names(metrics.sort_values("checkpoint_id")["checkpoint_id"])
    out = []
    for protocol in sorted({i.protocol for i in metrics["_identity"]}):
        m = metrics[metrics["_identity"].map(lambda i, p=protocol: i.protocol == p).astype(bool)]
        counts = m.groupby("_identity", sort=False)["checkpoint_id"].nunique()
        cols = sorted(ordered(set(m["_identity"])), key=lambda i: (list(METRICS).index(i.metric), -counts[i]))  # most checkpoints first
        head = [f"{METRICS[i.metric].heading} [{k + 1}]" for k, i in enumerate(cols)]
        lines = [f"protocol: **{protocol}** (lower is better; 95% intervals)", "", "| checkpoint | step | " + " | ".join(head) + " |",
                 "|---|---|" + "---|" * len(cols)]
        by = {i: m[m["_identity"].map(lambda x, i=i: x == i).astype(bool)].drop_duplicates("checkpoint_id", keep="last").set_index("checkpoint_id")
              for i in cols}
        order = by[cols[0]].sort_values("value").index.tolist()
        for cid in order + sorted(set(m["checkpoint_id"]) - set(order)):
            cells = [cell(by[i].loc[cid]) if cid in by[i].index else "" for i in cols]
            step = ckpts["step"].get(cid) if cid in ckpts.index else None
            lines.append(f"| {names[cid]} | {'' if step is None or pd.isna(step) else int(step)} | " + " | ".join(cells) + " |")
        lines += [""] + [f"[{k + 1}] {i.detail}" for k, i in enumerate(cols)]
        out.append("\n".join(lines))
    legend = ["checkpoints:"] + [f"  {n} = {c}" for c, n in names.items() if n != c]
    keys = [k for k in METRICS if k in PAPER_ROWS[0]]
    pub = [f"published ({PAPER_PROTOCOL}; VIPSeg val, the paper's Table 1: reference only, not comparable with the tables above)", "",
           "| method | " + " | ".join(METRICS[k].heading for k in keys) + " |", "|---|" + "---|" * len(keys)]
    pub += [f"| {r['method']} | " + " | ".join(str(r[k]) for k in keys) + " |" for r in PAPER_ROWS]
    return "\n\n".join(out + (["\n".join(legend)] if len(legend) > 1 else []) + ["\n".join(pub)])
