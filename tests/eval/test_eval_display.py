"""One formatter for every number a person reads: significant digits, never a zero-width interval."""

from __future__ import annotations

import math

from eval.display import TOO_SMALL, fmt_estimate, fmt_interval, fmt_percent_interval, fmt_value, short_names


def test_values_get_significant_digits_not_fixed_decimals():
    assert fmt_value(2.3456) == "2.35" and fmt_value(0.000123456) == "0.000123" and fmt_value(305.7) == "306"
    assert fmt_value(float("nan")) == "" and fmt_value(None) == ""


def test_an_intervals_ends_never_print_equal():
    # the "0.0 – 0.0" (an FID interval of width 0.03 at one decimal)
    lo, hi = fmt_interval(0.0123, 0.0456).split(" – ")
    assert lo != hi
    for a, b in ((2.30001, 2.30002), (0.0, 1e-9), (1e6, 1e6 + 1), (-0.04, 0.03)):
        lo, hi = fmt_interval(a, b).split(" – ")
        assert lo != hi, (a, b, lo, hi)
    assert fmt_interval(2.3, 2.3) == "2.30 (no spread)"


def test_a_small_n_or_missing_end_says_n_too_small():
    assert fmt_interval(0.0, 1.0, n=1, min_n=5) == TOO_SMALL
    assert fmt_interval(math.nan, 1.0) == TOO_SMALL and fmt_interval(-math.inf, 1.0) == TOO_SMALL
    assert fmt_percent_interval(0.0, 0.0, n=1, min_n=5) == TOO_SMALL
    assert fmt_percent_interval(0.2, 0.8, n=10, min_n=5) == "20 – 80 %"


def test_an_estimate_shares_its_intervals_decimals():
    assert fmt_estimate(2.06, 0.63, 3.96, sign=True, unit=" px") == "+2.1 px [+0.6 – +4.0]"
    assert fmt_estimate(2.3, 2.3, 2.3) == "2.30 [no spread]"
    assert fmt_estimate(2.3, 2.2, 2.4, n=1, min_n=2) == "2.30 [n too small]"


def test_short_names_name_the_step_the_kind_and_the_run_only_when_needed():
    one = short_names(["run-b43cceb500-s001000", "run-b43cceb500-s001000~nocontrol", "warp", "run-b43cceb500-s000500", "ck-7"])
    assert list(one.values()) == ["step 1000", "step 1000 · control off", "ref: warp", "step 500", "ck-7"]
    two = short_names(["run-b43cceb500-s001000", "run-aaaa000000-s001000"])
    assert list(two.values()) == ["step 1000 · run b43c", "step 1000 · run aaaa"]
