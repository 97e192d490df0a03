"""What the CLI checks before anything starts (no Prefect, no Ray, no workdir created), and how
it sums a run up for a person.

Every check fails with one sentence that names the valid values and, for a near miss, the
closest one ("did you mean ..."). Importing this module imports neither Prefect nor torch,
so a typo costs well under a second, not a server start.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable

STAGES = ("labels", "train", "generate", "evaluate")


class UsageError(ValueError):
    """A command-line value that is not one of the valid ones."""


def did_you_mean(value: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a close match among ``known``, else ''."""
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_of(flag: str, values: Iterable[str], known: Iterable[str]) -> list[str]:
    """``values`` if each is in ``known``, else :class:`UsageError` naming the first bad one and the valid ones."""
    known = list(known)
    values = list(values)
    if not values:
        raise UsageError(f"{flag} is empty; valid: {', '.join(known)}")
    for v in values:
        if v not in known:
            raise UsageError(f"{flag}: unknown value '{v}'{did_you_mean(v, known)}; valid: {', '.join(known)}")
    return values


def split_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def check_stages(text: str) -> list[str]:
    return one_of("--stages", split_list(text), STAGES)


def check_suites(text: str, flag: str = "--suites") -> list[str]:
    from core.suites import SUITES

    return one_of(flag, split_list(text), SUITES)


def check_checkpoints(workdir_url: str, ids: list[str], will_train: bool) -> None:
    """Each of ``ids`` is a reference or a row of the workdir's ``checkpoints`` table.

    When the run trains first, ids the run may create are let through (their names are known
    only once training has finished); the generate stage checks them again.
    """
    from core.checkpoints import REFERENCE_GENERATORS
    from core.tables import Workdir

    try:
        wd = Workdir(workdir_url, create=False)
        known = list(REFERENCE_GENERATORS) + [c for c in wd.read("checkpoints", columns=["checkpoint_id"])["checkpoint_id"]]
    except FileNotFoundError:
        known = list(REFERENCE_GENERATORS)
    for cid in ids:
        if cid in known or will_train:
            continue
        shown = known if len(known) <= 8 else [*known[:3], "...", *known[-4:]]
        raise UsageError(f"--checkpoint: '{cid}' is not in {workdir_url}'s checkpoints table{did_you_mean(cid, known)}; "
                         f"known: {', '.join(shown)} (`draganything status --workdir {workdir_url}` lists them)")


# ---------------------------------------------------------------------- summary


def stage_lines(report: dict) -> list[str]:
    """One short line per stage of a pipeline report (``pipeline_flow``'s dict), for a person."""
    seconds = report.get("seconds", {})
    lines = []

    def took(stage: str) -> str:
        return f" ({seconds[stage]:.0f} s)" if stage in seconds else ""

    if "labels" in report:
        parts = []
        for split, x in report["labels"].items():
            x = x or {}
            parts.append(f"{split} {x.get('videos', 0)} videos ({x.get('skipped', 0)} already labelled, {x.get('rejects', 0)} rejected)")
        lines.append(f"labels{took('labels')}: " + "; ".join(parts))
    if "train" in report:
        t = report["train"] or {}
        latest = t.get("latest")
        lines.append(f"train{took('train')}: " + (f"at step {t.get('step')}, newest checkpoint {latest}" if latest else "no checkpoint"))
    for stage in ("generate", "evaluate"):
        if stage in report:
            runs = report[stage]
            skipped = sum(1 for v in runs.values() if isinstance(v, dict) and v.get("skipped"))
            lines.append(f"{stage}{took(stage)}: {len(runs)} checkpoint/suite pair(s)" + (f", {skipped} unchanged since the last run" if skipped else ""))
    for v in report.get("verdicts", []):
        if v.get("verdict"):
            lines.append(f"verdict on {v['suite']}: {v['checkpoint']} is {v['verdict']} than the best other ({v['best']})")
    return lines


def as_json(report: dict) -> str:
    return json.dumps(report, default=str)
