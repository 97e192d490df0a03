"""Bootstrap intervals: coverage, reproducibility, the cheap special cases agree with the generic one."""

import numpy as np
import pytest

from eval.bootstrap import (
    ItemFeatures,
    bootstrap_ci,
    bootstrap_ratio,
    frechet_interval,
    resample_counts,
    resample_indices,
)
from eval.frechet import GaussianStats


def test_contains_true_mean_and_reproducible():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=200)
    ci = bootstrap_ci(lambda idx: x[idx].mean(), len(x), n_boot=500, seed=7)
    assert ci.low < 3.0 < ci.high
    assert ci.value == pytest.approx(x.mean())
    assert ci.n == 200 and ci.n_boot == 500
    again = bootstrap_ci(lambda idx: x[idx].mean(), len(x), n_boot=500, seed=7)
    assert (again.low, again.high) == (ci.low, ci.high)
    other = bootstrap_ci(lambda idx: x[idx].mean(), len(x), n_boot=500, seed=8)
    assert (other.low, other.high) != (ci.low, ci.high)


def test_coverage_near_nominal():
    # 300 data sets of 100 normal draws: a 90% interval should cover the true mean ~90% of the time.
    rng = np.random.default_rng(1)
    hits = 0
    trials = 300
    for k in range(trials):
        x = rng.normal(0.0, 1.0, size=100)
        ci = bootstrap_ratio(x, np.ones_like(x), n_boot=400, confidence=0.9, seed=k)
        hits += ci.low <= 0.0 <= ci.high
    assert 0.82 <= hits / trials <= 0.96


def test_counts_and_indices_are_the_same_draws():
    idx = resample_indices(7, 5, seed=3)
    counts = resample_counts(7, 5, seed=3)
    assert counts.sum(axis=1).tolist() == [7] * 5
    for r in range(5):
        assert np.array_equal(np.bincount(idx[r], minlength=7), counts[r])


def test_ratio_equals_generic():
    # ObjMC: per-video summed error and number of counted (entity, frame) pairs.
    rng = np.random.default_rng(2)
    num = rng.uniform(0, 100, 25)
    den = rng.integers(1, 40, 25).astype(float)
    fast = bootstrap_ratio(num, den, n_boot=300, seed=11)
    slow = bootstrap_ci(lambda i: num[i].sum() / den[i].sum(), 25, n_boot=300, seed=11)
    assert fast.value == pytest.approx(num.sum() / den.sum())
    assert fast.low == pytest.approx(slow.low) and fast.high == pytest.approx(slow.high)


def test_ratio_skips_empty_resamples():
    ci = bootstrap_ratio([1.0, 0.0], [1.0, 0.0], n_boot=200, seed=0)  # an item with nothing counted
    assert ci.value == pytest.approx(1.0)
    assert ci.n_boot < 200  # resamples of only the empty item give nan and are skipped
    assert ci.low == pytest.approx(1.0) and ci.high == pytest.approx(1.0)


def test_item_features_weighted_stats_equal_repeated_rows():
    rng = np.random.default_rng(3)
    items = [rng.normal(size=(n, 6)) for n in (3, 5, 2, 4)]
    feats = ItemFeatures(items)
    w = np.array([2, 0, 1, 3])
    expanded = np.concatenate([np.repeat(items[i], w[i], axis=0) for i in range(4)])
    s = feats.stats(w)
    ref = GaussianStats.from_features(expanded)
    assert s.n == ref.n
    np.testing.assert_allclose(s.mean, ref.mean, rtol=1e-12)
    np.testing.assert_allclose(s.cov, ref.cov, rtol=1e-10, atol=1e-12)


def test_frechet_interval():
    rng = np.random.default_rng(4)
    gen = ItemFeatures([rng.normal(size=(4, 5)) + 0.5 for _ in range(30)])
    real = ItemFeatures([rng.normal(size=(4, 5)) for _ in range(30)])
    ci = frechet_interval(gen, real)
    assert ci.value == pytest.approx(gen.stats().frechet(real.stats()))
    assert ci.low < ci.high and ci.low > 0 and ci.low <= ci.estimate <= ci.high
    assert frechet_interval(gen, real) == ci  # deterministic: groups by item order
    # Fixed reference statistics: only the generated side loses items.
    fixed = frechet_interval(gen, real.stats())
    assert fixed.value == pytest.approx(ci.value) and fixed.replicates != ci.replicates
    with pytest.raises(ValueError, match="pairs item i"):
        frechet_interval(gen, ItemFeatures([np.zeros((1, 5))] * 3))


def test_paired_difference_is_narrower_than_unpaired_and_finds_a_small_gain():
    # 30 items whose difficulty varies a lot (5..50 px); checkpoint a is 1 px better on every item.
    from eval.bootstrap import paired_ratio_difference

    rng = np.random.default_rng(4)
    den = rng.integers(10, 40, 30).astype(float)
    hard = rng.uniform(5, 50, 30)
    num_b = hard * den
    num_a = (hard - 1.0 + rng.normal(0, 0.2, 30)) * den
    d = paired_ratio_difference(num_a, den, num_b, den, n_boot=500, seed=0)
    assert d.value == pytest.approx(num_a.sum() / den.sum() - num_b.sum() / den.sum())
    assert d.high < 0  # a better than b: the paired interval excludes 0
    a, b = bootstrap_ratio(num_a, den, n_boot=500, seed=0), bootstrap_ratio(num_b, den, n_boot=500, seed=0)
    assert a.high > b.low  # the two separate intervals overlap: they cannot tell
    assert d.high - d.low < 0.25 * (a.high - a.low)


def test_paired_difference_covers_zero_when_there_is_none():
    from eval.bootstrap import paired_ratio_difference

    rng = np.random.default_rng(5)
    hits, trials = 0, 200
    for k in range(trials):
        den = rng.integers(5, 20, 25).astype(float)
        base = rng.uniform(5, 30, 25)
        a = (base + rng.normal(0, 2, 25)) * den
        b = (base + rng.normal(0, 2, 25)) * den
        ci = paired_ratio_difference(a, den, b, den, n_boot=300, confidence=0.9, seed=k)
        hits += ci.low <= 0.0 <= ci.high
    assert 0.82 <= hits / trials <= 0.97
