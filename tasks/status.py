"""What a workdir holds, as a person wants to see it before a run (each metric labelled with its identity)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from core.tables import TABLES, Workdir
from eval.catalog import labelled


def workdir_status(wd: Workdir) -> dict:
    labels = wd.read("labels", columns=["dataset", "split", "video_id", "entity_id"])
    ckpts = wd.read("checkpoints").sort_values("created_at")
    metrics = labelled(wd.read("metrics"))
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
        # "suite/metric[protocol]"; the whole identity only where one protocol holds two identities of a metric
        short = [f"{r.suite}/{r.metric}[{r.protocol}]" for r in m.itertuples()]
        keys = [k if short.count(k) == 1 else f"{r.suite}/{r.metric}[{r.identity}]" for k, r in zip(short, m.itertuples())]
        rows.append(
            {
                "checkpoint": c.checkpoint_id,
                "step": int(c.step) if pd.notna(c.step) else None,
                "parent": c.parent,
                "samples": {b: int(g["item_id"].nunique()) for b, g in s.groupby("suite")},
                "metrics": {k: round(float(r.value), 3) for k, r in zip(keys, m.itertuples())},
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


def format_status(st: dict, fmt: Callable[[float], str] = str) -> str:
    """The status for a person; ``fmt`` shows a metric value (the CLI passes ``eval.display.fmt_value``).
    A checkpoint's metrics go one suite per line, so no line grows with the number of suites."""
    lines = [f"workdir {st['workdir']}"]
    lines.append("labels:" if st["labels"] else "labels: none yet (run `draganything labels`)")
    lines += [f"  {x['dataset']}/{x['split']}: {x['videos']} videos, {x['entities']} entities" for x in st["labels"]]
    lines.append("checkpoints:" if st["checkpoints"] else "checkpoints: none yet (run `draganything train`)")
    for c in st["checkpoints"]:
        samples = ", ".join(f"{b}: {n} items" for b, n in c["samples"].items()) or "no samples"
        lines.append(f"  {c['checkpoint']} (step {c['step']}): {samples}" + ("" if c["metrics"] else "; no metrics yet"))
        by_suite: dict[str, list[str]] = {}
        for key, v in c["metrics"].items():  # "suite/metric[protocol]"
            suite, rest = key.split("/", 1)
            by_suite.setdefault(suite, []).append(f"{rest} {fmt(v)}")
        lines += [f"    {suite}: " + ", ".join(parts) for suite, parts in by_suite.items()]
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
