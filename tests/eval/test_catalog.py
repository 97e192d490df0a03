"""The evaluation catalogue: identities read back without parsing prose, one comparison per metric, one home
for each registry (the product code is searched, so a second copy fails here)."""

import math
import re
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import CONDITIONINGS, PROTOCOLS, TRACKERS, Config, load_config
from core.schema import LEGACY_IDENTITY
from eval import catalog
from eval.bootstrap import Interval
from eval.protocol import protocol_for

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = [p for d in ("core", "eval", "model", "tasks", "flows", "dashboard") for p in (ROOT / d).rglob("*.py")]


def _interval(low: float, high: float) -> Interval:
    return Interval((low + high) / 2, low, high, 12, 1000, 0.95)


def test_an_identity_is_stored_as_json_and_old_prose_reads_as_the_same_identity():
    ident = catalog.objmc_identity(load_config("tiny", {"evaluate.protocol": "official"}), "vipseg-val")
    stored = ident.stored()
    assert stored.startswith("{") and catalog.Identity.read(stored, "objmc") == ident
    assert catalog.Identity.read(ident.label, "objmc") == ident  # a part written before identities were JSON
    legacy = catalog.Identity.read(LEGACY_IDENTITY, "objmc")
    assert legacy.protocol == "legacy" and legacy.label == LEGACY_IDENTITY
    rows = pd.DataFrame({"identity": [stored, ident.label], "metric": ["objmc", "objmc"]})
    assert catalog.labelled(rows)["identity"].nunique() == 1


def test_identities_differ_with_every_setting_that_changes_the_number():
    base = load_config("tiny")
    ids = {catalog.objmc_identity(load_config("tiny", o), "sample") for o in
           ({}, {"evaluate.protocol": "official"}, {"evaluate.tracker.lk.win_size": 21}, {"evaluate.grid_size": 6})}
    assert len(ids) == 4
    p = catalog.protocol_of(base)
    assert catalog.fid_identity(p, "b", (64, 64)) != catalog.fid_identity(protocol_for("official"), "b", (64, 64))
    assert catalog.fvd_identity(p, "b", (64, 64), 8).metric == "fvd"


def test_a_verdict_needs_a_whole_interval_on_one_side_and_a_missing_interval_is_no_win():
    assert catalog.verdict(_interval(-2.0, -0.1)) == catalog.BETTER
    assert catalog.verdict(_interval(0.1, 2.0)) == catalog.WORSE
    assert catalog.verdict(_interval(-0.1, 0.1)) == catalog.SAME
    assert catalog.verdict(_interval(math.nan, math.nan)) == catalog.SAME  # too few items for an interval
    assert catalog.verdict(_interval(-math.inf, -1.0)) == catalog.SAME
    assert catalog.verdict(None) == catalog.SAME


def test_each_metric_has_its_paired_comparison():
    rng = np.random.default_rng(0)
    items = pd.DataFrame({"total": rng.uniform(10, 20, 12), "count": np.full(12, 4.0)}, index=[f"v{i}" for i in range(12)])
    a = catalog.Scored("a", 1.0, 12, items=items)
    b = catalog.Scored("b", 1.0, 12, items=items.assign(total=items["total"] + 8.0))
    ci, how = catalog.compare("objmc", a, b)
    assert ci.value == pytest.approx(-2.0) and catalog.verdict(ci) == catalog.BETTER and "flat-mean" in how
    none, why = catalog.compare("objmc", a, catalog.Scored("c", 1.0, 2, items=items.rename(index=lambda i: i + "x")))
    assert none is None and "shared" in why
    fa = catalog.Scored("a", 10.0, 12, replicates=tuple(10 + rng.normal(0, 0.1, 12)), items_digest="d")
    fb = catalog.Scored("b", 14.0, 12, replicates=tuple(14 + rng.normal(0, 0.1, 12)), items_digest="d")
    assert catalog.verdict(catalog.compare("fid", fa, fb)[0], "fid") == catalog.BETTER
    assert catalog.compare("fvd", fa, catalog.Scored("b", 14.0, 12, replicates=fb.replicates, items_digest="other")) == (None, "measured on different items")
    assert set(catalog.METRICS) == {"objmc", "fid", "kid", "fvd", "kvd"} and all(m.lower_is_better for m in catalog.METRICS.values())


def test_the_config_literals_are_the_registries():
    model, evaluate = Config.model_fields["model"].annotation, Config.model_fields["evaluate"].annotation
    assert typing.get_args(model.model_fields["conditioning"].annotation) == CONDITIONINGS
    assert typing.get_args(evaluate.model_fields["protocol"].annotation) == PROTOCOLS
    assert typing.get_args(evaluate.model_fields["tracker"].annotation.model_fields["kind"].annotation) == TRACKERS
    assert all(protocol_for(p).name == p for p in PROTOCOLS)


@pytest.mark.parametrize("pattern, home", [
    (r"^class ItemError\b", "core/rejects.py"),  # one "an item failed"
    (r"paired_ratio_difference\(|paired_jackknife_difference\(", "eval/catalog.py"),  # one paired comparison per metric (callers)
    (r"grid_size=protocol\.grid_size", "eval/catalog.py"),  # one protocol -> tracking-rules map
    (r"\"ObjMC\"", "eval/catalog.py"),  # one metric list (display names)
    (r"324\.6", "eval/catalog.py"),  # the paper's rows
    (r"block_out_channels\"?\]?\) - 1", "model/tiny.py"),  # the VAE factor
    (r"win_size\b.*\b9\b", "core/config.py"),  # the LK defaults
])
def test_each_concept_has_one_home_in_the_product(pattern, home):
    rx = re.compile(pattern, re.M)
    found = sorted({str(p.relative_to(ROOT)) for p in PRODUCT if rx.search(p.read_text()) and not str(p).endswith("bootstrap.py")})
    assert found == [home]
