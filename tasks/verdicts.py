"""Decisions from a workdir's numbers: the current best, each checkpoint's verdict against it, the
control-off effect, and the markdown a run, ``draganything report`` and ``status`` show.

Everything is per identity (``eval.catalog.Identity``): a checkpoint scored under two
identities gets two verdicts, each labelled with its identity and each against the best
of that identity only. The comparison is the metric's own (``eval.catalog.compare``):
for ObjMC the paired bootstrap of the flat-mean difference on the items both were scored
on. "Better" means the whole interval of (candidate - best) lies below 0.

The current best on a suite is the trained checkpoint (not a reference generator, not a
``~nocontrol`` baseline) with the lowest ObjMC of that identity, the candidate left out.
"""

from __future__ import annotations

import pandas as pd

from core.checkpoints import NO_CONTROL, trained
from core.tables import Workdir
from eval.catalog import (
    BETTER,
    SAME,
    WORSE,
    Identity,
    Scored,
    compare,
    ordered,
    scored_by_identity,
    verdict,
)
from eval.display import fmt_estimate, fmt_value, short_names
from eval.report import metrics_table

__all__ = ["BETTER", "SAME", "WORSE", "compare_to_best", "control_effects", "current_best", "describe",
           "newest_verdicts", "objmc_scores", "run_report"]


def objmc_scores(wd: Workdir, suite: str) -> dict[Identity, dict[str, Scored]]:
    """Per ObjMC identity on ``suite``: each scored checkpoint's per-item statistics."""
    objmc = wd.read("objmc", columns=["checkpoint_id", "suite", "item_id", "per_frame", "identity"])
    return scored_by_identity(pd.DataFrame(), objmc, suite, "objmc")


def current_best(scores: dict[str, Scored], trained_ids: set[str], leave_out: str | None = None) -> str | None:
    """The trained checkpoint with the lowest ObjMC among ``scores`` (one identity's), ``leave_out`` excluded."""
    cands = sorted((s.value, cid) for cid, s in scores.items() if cid in trained_ids and cid != leave_out)
    return cands[0][1] if cands else None


def compare_to_best(wd: Workdir, suite: str, checkpoints: list[str]) -> list[dict]:
    """For each checkpoint and each identity it was scored under: the best of that identity, the paired difference, the verdict."""
    by_identity, trained_ids = objmc_scores(wd, suite), {r["checkpoint_id"] for r in trained(wd)}
    out = []
    for ident in ordered(by_identity):
        scores = by_identity[ident]
        for cid in (c for c in checkpoints if c in scores):
            best = current_best(scores, trained_ids, leave_out=cid)
            diff, _ = compare("objmc", scores[cid], scores[best]) if best else (None, "")
            out.append({"checkpoint": cid, "suite": suite, "identity": ident.label, "best": best,
                        "verdict": verdict(diff) if best else None, "difference": None if diff is None else diff.value,
                        "ci": None if diff is None else (diff.low, diff.high), "items": 0 if diff is None else diff.n})
    return out


def newest_verdicts(wd: Workdir, suite: str) -> list[dict]:
    """Per ObjMC identity: the newest trained checkpoint scored under it, compared with the best of the others."""
    order = [r["checkpoint_id"] for r in trained(wd)]
    out = []
    for ident, scores in objmc_scores(wd, suite).items():
        newest = [c for c in order if c in scores][-1:]
        out += [v for v in compare_to_best(wd, suite, newest) if v["identity"] == ident.label]
    return sorted(out, key=lambda v: v["identity"])


def control_effects(wd: Workdir, suite: str) -> list[dict]:
    """Per identity, each trained checkpoint against its own weights with control off (``<id>~nocontrol``):
    both flat means over the items both were scored on, their ratio, and the paired interval of (on - off)."""
    out = []
    by_identity = objmc_scores(wd, suite)
    for ident in ordered(by_identity):
        scores = by_identity[ident]
        for off_id in sorted(c for c in scores if c.endswith(NO_CONTROL)):
            on_id = off_id[: -len(NO_CONTROL)]
            if on_id not in scores:
                continue
            d, _ = compare("objmc", scores[on_id], scores[off_id])
            if d is None:
                continue
            shared = sorted(set(scores[on_id].items.index) & set(scores[off_id].items.index))
            on, off = scores[on_id].items.loc[shared], scores[off_id].items.loc[shared]
            a, b = on["total"].sum() / on["count"].sum(), off["total"].sum() / off["count"].sum()
            out.append(dict(checkpoint_id=on_id, identity=ident.label, protocol=ident.protocol, on=float(a), off=float(b), ratio=float(a / b),
                            diff=d.value, low=d.low, high=d.high, items=len(shared)))
    return out


def describe(v: dict) -> str:
    where = f"[{v['identity']}] "
    if not v["best"]:
        return f"{where}`{v['checkpoint']}`: no other trained checkpoint scored on {v['suite']} under this identity yet"
    if v["ci"] is None:
        return f"{where}`{v['checkpoint']}`: no suite item in common with the best, `{v['best']}`"
    lo, hi = v["ci"]
    than = "from" if v["verdict"] == SAME else "than"  # "indistinguishable from", "better than"
    return (f"{where}`{v['checkpoint']}` is **{v['verdict']}** {than} the best, `{v['best']}`: ObjMC difference "
            f"{fmt_estimate(v['difference'], lo, hi, sign=True, unit=' px')} (paired bootstrap, 95%, {v['items']} items)")


def describe_control_effect(e: dict) -> str:
    """One line (the protocol names the identity; the report's legend spells it out)."""
    name = short_names([e["checkpoint_id"]])[e["checkpoint_id"]]
    return (f"[{e['protocol']}] {name} against control off, ObjMC on {e['items']} items: {fmt_value(e['on'])} vs {fmt_value(e['off'])} px "
            f"(ratio {fmt_value(e['ratio'])}); difference {fmt_estimate(e['diff'], e['low'], e['high'], sign=True, unit=' px')} "
            "(95% paired bootstrap)")


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
