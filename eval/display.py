"""How a number is shown to a person: significant digits, intervals that never read as certainty.

The one formatter of the project's pages, ``report`` and ``status`` (tables and CSV keep
raw floats). Rules:

* a value gets ``digits`` significant digits (``fmt_value(2.3456) == "2.35"``);
* an interval is printed with the same number of decimals at both ends, enough that the
  two ends differ: ``fmt_interval(0.0123, 0.0456) == "0.012 – 0.046"``; digits are added
  until they do, and an interval whose ends are equal as numbers says so ("no spread");
* an interval whose ends are missing or not finite, or whose ``n`` is under ``min_n``,
  is shown as ``"n too small"``: with one vote per pair a win rate of "100 – 100 %" would
  read as certainty.
"""

from __future__ import annotations

import math
import re
from typing import Any

from core.checkpoints import NO_CONTROL, REFERENCE_GENERATORS

TOO_SMALL = "n too small"
NO_SPREAD = "no spread"
DASH = " – "
MAX_DECIMALS = 12


def _num(x: Any) -> float | None:
    """A finite float, or None for None/NaN/inf/non-numbers."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def decimals_for(x: float, digits: int = 3) -> int:
    """Decimals that give ``x`` ``digits`` significant digits (0 for numbers >= 10**digits)."""
    if x == 0:
        return max(0, digits - 1)
    return max(0, digits - 1 - math.floor(math.log10(abs(x))))


def fmt_value(x: Any, digits: int = 3, sign: bool = False, unit: str = "") -> str:
    """``x`` with ``digits`` significant digits; "" when missing or not finite."""
    f = _num(x)
    if f is None:
        return ""
    d = min(decimals_for(f, digits), MAX_DECIMALS)
    s = f"{f:+.{d}f}" if sign else f"{f:.{d}f}"
    return s + unit


def fmt_interval(lo: Any, hi: Any, n: int | None = None, min_n: int = 2, digits: int = 2, sign: bool = False, unit: str = "") -> str:
    """``"lo – hi"`` with ends that print differently, or ``"n too small"`` / ``"x (no spread)"``.

    ``digits``: significant digits of the interval's width (the decimals shared by both ends
    come from it, then grow until the ends differ).
    """
    a, b = _num(lo), _num(hi)
    if a is None or b is None or (n is not None and n < min_n):
        return TOO_SMALL
    if a == b:
        return f"{fmt_value(a, 3, sign)}{unit} ({NO_SPREAD})"
    d = min(decimals_for(b - a, digits), MAX_DECIMALS)
    while d < MAX_DECIMALS and f"{a:.{d}f}" == f"{b:.{d}f}":
        d += 1
    spec = f"+.{d}f" if sign else f".{d}f"
    return f"{a:{spec}}{DASH}{b:{spec}}{unit}"


def fmt_estimate(value: Any, lo: Any, hi: Any, n: int | None = None, min_n: int = 2, sign: bool = False, unit: str = "") -> str:
    """``"value [lo – hi]"``: the point with the interval's decimals (or its own significant digits)."""
    v = _num(value)
    if v is None:
        return ""
    ci = fmt_interval(lo, hi, n=n, min_n=min_n, sign=sign)
    if ci == TOO_SMALL or NO_SPREAD in ci:
        return f"{fmt_value(v, 3, sign)}{unit} [{TOO_SMALL if ci == TOO_SMALL else NO_SPREAD}]"
    left = ci.split(DASH)[0]
    decimals = len(left.rsplit(".", 1)[1]) if "." in left else 0
    return f"{v:{'+' if sign else ''}.{decimals}f}{unit} [{ci}]"


def fmt_percent_interval(lo: Any, hi: Any, n: int | None = None, min_n: int = 2) -> str:
    """A rate's interval (fractions in, percent out)."""
    a, b = _num(lo), _num(hi)
    return fmt_interval(None if a is None else a * 100, None if b is None else b * 100, n=n, min_n=min_n, unit=" %")


# ---------------------------------------------------------------------- names

_CKPT = re.compile(r"^(run-[0-9a-f]+)-s(\d+)$")


def short_name(checkpoint_id: str, with_run: bool = False) -> str:
    """``run-b43c…-s001000`` -> ``step 1000``; ``…~nocontrol`` -> ``step 1000 · control off``; ``warp`` -> ``ref: warp``.

    ``with_run`` adds the run's first hex digits, for pages that show several runs.
    Ids of another shape are returned as they are.
    """
    base, off = (checkpoint_id[: -len(NO_CONTROL)], True) if checkpoint_id.endswith(NO_CONTROL) else (checkpoint_id, False)
    if base in REFERENCE_GENERATORS:
        return f"ref: {base}"
    m = _CKPT.match(base)
    if m is None:
        return checkpoint_id
    name = f"step {int(m.group(2))}" + (f" · run {m.group(1)[4:8]}" if with_run else "")
    return name + (" · control off" if off else "")


def short_names(checkpoint_ids) -> dict[str, str]:
    """A short, unique display name for each id: the run is named only when several runs are present."""
    ids = list(dict.fromkeys(checkpoint_ids))
    runs = {m.group(1) for c in ids if (m := _CKPT.match(c.removesuffix(NO_CONTROL)))}
    names = {c: short_name(c, with_run=len(runs) > 1) for c in ids}
    seen: dict[str, int] = {}
    for n in names.values():
        seen[n] = seen.get(n, 0) + 1
    return {c: (n if seen[n] == 1 else c) for c, n in names.items()}
