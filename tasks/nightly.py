"""What a pipeline run tells the team: the metrics, the checkpoints it evaluated, and whether each is
significantly better, worse or indistinguishable from the current best.

The verdict is a paired comparison on ObjMC: the same suite items scored under both
checkpoints, one bootstrap draw of items for both sides (``eval.bootstrap.paired_ratio_difference``
on each item's summed error and counted (entity, frame) pairs, i.e. the official flat mean).
"Better" means the whole interval of (candidate - best) lies below 0 (lower ObjMC is better).
:func:`paired_objmc_difference` is the one place that computes it, so another paired test can
replace it there.

The current best on a suite is the trained checkpoint (not a reference generator, not a
``~nocontrol`` baseline) with the lowest ObjMC, the candidate itself left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.checkpoints import trained
from core.tables import Workdir
from eval.bootstrap import Interval, paired_ratio_difference
from eval.display import fmt_estimate
from eval.report import metrics_table

BETTER, WORSE, SAME = "better", "worse", "indistinguishable"


def objmc_per_item(wd: Workdir, suite: str) -> pd.DataFrame:
    """Per (checkpoint, item): summed ObjMC error and counted (entity, frame) pairs."""
    objmc = wd.read("objmc", columns=["checkpoint_id", "suite", "item_id", "per_frame"])
    objmc = objmc[objmc["suite"] == suite]
    if objmc.empty:
        return pd.DataFrame(columns=["checkpoint_id", "item_id", "total", "count"])
    frames = objmc["per_frame"].apply(lambda x: np.asarray(x, np.float64))
    objmc = objmc.assign(total=frames.apply(np.nansum), count=frames.apply(lambda a: float(np.isfinite(a).sum())))
    return objmc.groupby(["checkpoint_id", "item_id"], as_index=False)[["total", "count"]].sum()


def _on_common_items(per_item: pd.DataFrame, a_id: str, b_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-item rows of two checkpoints, restricted to the items both were scored on (same order)."""
    a = per_item[per_item["checkpoint_id"] == a_id].set_index("item_id")
    b = per_item[per_item["checkpoint_id"] == b_id].set_index("item_id")
    common = sorted(set(a.index) & set(b.index))
    return a.loc[common], b.loc[common]


def paired_objmc_difference(per_item: pd.DataFrame, candidate: str, best: str, seed: int = 0) -> Interval | None:
    """ObjMC(candidate) - ObjMC(best) on the items both were scored on, with its paired bootstrap interval."""
    a, b = _on_common_items(per_item, candidate, best)
    if a.empty:
        return None
    return paired_ratio_difference(a["total"], a["count"], b["total"], b["count"], seed=seed)


def control_effects(wd: Workdir, suite: str) -> list[dict]:
    """Each trained checkpoint against the same weights with control off (``<id>~nocontrol``) on ObjMC:
    both flat means, their ratio, and the paired interval of (on - off) over the items both were scored on."""
    from core.checkpoints import NO_CONTROL

    per_item = objmc_per_item(wd, suite)
    out = []
    for off_id in sorted({c for c in per_item["checkpoint_id"] if c.endswith(NO_CONTROL)}):
        on_id = off_id[: -len(NO_CONTROL)]
        d = paired_objmc_difference(per_item, on_id, off_id)
        if d is None:
            continue
        on, off = _on_common_items(per_item, on_id, off_id)
        a, b = on["total"].sum() / on["count"].sum(), off["total"].sum() / off["count"].sum()
        out.append(dict(checkpoint_id=on_id, on=float(a), off=float(b), ratio=float(a / b), diff=d.value, low=d.low, high=d.high,
                        items=len(on)))
    return out


def verdict(diff: Interval | None) -> str:
    if diff is None or not np.isfinite(diff.low) or not np.isfinite(diff.high):
        return SAME
    return BETTER if diff.high < 0 else WORSE if diff.low > 0 else SAME


def current_best(wd: Workdir, suite: str, leave_out: str | None = None) -> str | None:
    """The trained checkpoint with the lowest ObjMC on ``suite`` (``leave_out`` excluded)."""
    metrics = wd.read("metrics")
    metrics = metrics[(metrics["suite"] == suite) & (metrics["metric"] == "objmc")]
    metrics = metrics[metrics["checkpoint_id"].isin({r["checkpoint_id"] for r in trained(wd)} - {leave_out})]
    return None if metrics.empty else str(metrics.sort_values(["value", "checkpoint_id"]).iloc[0]["checkpoint_id"])


def compare_to_best(wd: Workdir, suite: str, checkpoints: list[str]) -> list[dict]:
    """For each checkpoint: the current best it is compared with, the paired difference, the verdict."""
    per_item = objmc_per_item(wd, suite)
    out = []
    for cid in checkpoints:
        best = current_best(wd, suite, leave_out=cid)
        diff = paired_objmc_difference(per_item, cid, best) if best else None
        out.append({"checkpoint": cid, "suite": suite, "best": best, "verdict": verdict(diff) if best else None,
                    "difference": None if diff is None else diff.value,
                    "ci": None if diff is None else (diff.low, diff.high), "items": 0 if diff is None else diff.n})
    return out


def newest_verdict(wd: Workdir, suite: str) -> dict | None:
    """The newest trained checkpoint with ObjMC on ``suite``, compared with the best of the others."""
    scored = set(objmc_per_item(wd, suite)["checkpoint_id"])
    newest = [c for c in [r["checkpoint_id"] for r in trained(wd)] if c in scored]
    return compare_to_best(wd, suite, newest[-1:])[0] if newest else None


def describe(v: dict) -> str:
    if not v["best"]:
        return f"`{v['checkpoint']}`: no other trained checkpoint scored on {v['suite']} yet"
    if v["ci"] is None:
        return f"`{v['checkpoint']}`: no suite item in common with the best, `{v['best']}`"
    lo, hi = v["ci"]
    than = "from" if v["verdict"] == SAME else "than"  # "indistinguishable from", "better than"
    return (f"`{v['checkpoint']}` is **{v['verdict']}** {than} the best, `{v['best']}`: ObjMC difference "
            f"{fmt_estimate(v['difference'], lo, hi, sign=True, unit=' px')} (paired bootstrap, 95%, {v['items']} items)")


def run_report(wd: Workdir, suites: list[str], evaluated: dict[str, list[str]]) -> tuple[str, list[dict]]:
    """The markdown of one pipeline run (``evaluated``: suite -> checkpoints scored in this run), and the verdicts."""
    lines, verdicts = [f"# DragAnything pipeline run on `{wd.url}`", ""], []
    for suite in suites:
        done = evaluated.get(suite, [])
        lines += [f"## {suite}", "", f"Evaluated in this run: {', '.join(f'`{c}`' for c in done) or 'none (nothing new)'}", ""]
        found = compare_to_best(wd, suite, done)
        verdicts += found
        lines += [f"- {describe(v)}" for v in found] + ([""] if found else [])
        lines += [metrics_table(wd, suite), ""]
    return "\n".join(lines), verdicts
