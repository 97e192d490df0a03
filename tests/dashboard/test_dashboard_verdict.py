"""The dashboard says 'better' or 'worse' only where the paired interval of the difference excludes 0."""

import math

from dashboard.data import verdict
from eval.bootstrap import Interval


def _ci(low, high):
    return Interval(value=(low + high) / 2, low=low, high=high, n=12, n_boot=1000, confidence=0.95)


def test_better_and_worse_only_where_the_interval_excludes_zero():
    # ObjMC: lower is better, so a wholly negative (this - other) is better
    assert verdict(_ci(-2.0, -0.1), "objmc", "better", "worse", "paired") == "better"
    assert verdict(_ci(0.1, 2.0), "objmc", "better", "worse", "paired") == "worse"
    for low, high in [(-2.0, 0.0), (-0.1, 0.1), (0.0, 2.0)]:  # touching or covering 0: no claim
        assert verdict(_ci(low, high), "objmc", "better", "worse", "paired") == "no clear difference"


def test_no_interval_is_said_as_such():
    assert verdict(None, "objmc", "better", "worse", "one seed").startswith("no paired interval (one seed")
    assert verdict(_ci(-math.inf, -1.0), "fid", "better", "worse", "x").startswith("no paired interval")
