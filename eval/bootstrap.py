"""Bootstrap confidence intervals that resample items (videos), with a fixed seed.

The generic entry point is ``bootstrap_ci(statistic, n_items)``: ``statistic``
gets an array of item indices (drawn with replacement, repeats allowed) and
returns a number; the interval is the percentile interval of that number over
``n_boot`` resamples. The point value is the statistic on all items (index
``arange(n)``), not the mean of the resamples.

Two cheap special cases avoid recomputing anything per item:
  * ``bootstrap_ratio``: statistics of the form sum(num_i) / sum(den_i), e.g. the
    official ObjMC flat mean (num_i = summed error of video i, den_i = its number
    of counted (entity, frame) pairs). Vectorised: one matrix product.
  * ``bootstrap_frechet``: FID/FVD. Per-item feature rows are kept
    (``ItemFeatures``); a resample is a vector of item multiplicities, and the
    resampled mean/covariance come from weighted sums of those rows (no feature
    is recomputed, nothing D x D is stored per item). Memory: the feature rows,
    O(rows x D); time per resample: one weighted Gram product and one D x D
    symmetric eigenproblem (about a second at D = 2048 on a CPU).

Note on Fréchet statistics: resampling with replacement repeats items, which
lowers the effective sample size, and FID/FVD are biased upwards at small sample
sizes, so resampled values sit above the point value. The percentile interval
then need not contain the point value; the report keeps both honest rather than
recentering.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from eval.frechet import FrechetReference, GaussianStats, frechet_distance

DEFAULT_N_BOOT = 1000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A point value with its bootstrap percentile interval."""

    value: float
    low: float
    high: float
    n: int  # items
    n_boot: int  # resamples that gave a finite statistic
    confidence: float


def resample_indices(n_items: int, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n_boot, n_items) item indices drawn uniformly with replacement; same seed, same draws."""
    if n_items < 1:
        raise ValueError("bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_items, size=(n_boot, n_items))


def resample_counts(n_items: int, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The same draws as ``resample_indices`` as multiplicities: (n_boot, n_items), rows sum to n_items."""
    idx = resample_indices(n_items, n_boot, seed)
    offsets = (np.arange(n_boot) * n_items)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=n_boot * n_items).reshape(n_boot, n_items)


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    s = np.asarray(samples, np.float64)
    s = s[np.isfinite(s)]
    if not len(s):
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(s, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _interval(value: float, samples: np.ndarray, n: int, confidence: float) -> Interval:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    lo, hi = percentile_interval(samples, confidence)
    return Interval(float(value), lo, hi, int(n), int(np.isfinite(samples).sum()), confidence)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n_items: int,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Percentile bootstrap interval of ``statistic(item_indices)``; resamples giving nan are skipped."""
    value = statistic(np.arange(n_items))
    idx = resample_indices(n_items, n_boot, seed)
    samples = np.array([statistic(row) for row in idx], np.float64)
    return _interval(value, samples, n_items, confidence)


def bootstrap_ratio(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Interval of sum(num) / sum(den) resampling items; e.g. ObjMC's flat mean over pairs."""
    num = np.asarray(numerators, np.float64)
    den = np.asarray(denominators, np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"numerators and denominators must be 1-D of one length, got {num.shape} and {den.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        value = num.sum() / den.sum() if den.sum() > 0 else float("nan")
        counts = resample_counts(len(num), n_boot, seed).astype(np.float64)
        d = counts @ den
        samples = np.where(d > 0, (counts @ num) / np.where(d > 0, d, 1.0), np.nan)
    return _interval(value, samples, len(num), confidence)


def paired_ratio_difference(
    num_a: Sequence[float] | np.ndarray,
    den_a: Sequence[float] | np.ndarray,
    num_b: Sequence[float] | np.ndarray,
    den_b: Sequence[float] | np.ndarray,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Interval of ``sum(num_a)/sum(den_a) - sum(num_b)/sum(den_b)`` with the same items drawn for both.

    Item i of ``a`` and item i of ``b`` are the same suite item (e.g. ObjMC's summed error
    and counted pairs of one video under two checkpoints), so one draw of indices resamples
    both sides: the interval is for the difference on these items, which is much narrower
    than two independent intervals when the items vary more than the checkpoints do. "A is
    better than B" is supported when the whole interval lies below 0 (lower is better).
    Items may be (item, seed) units when several seeds were run.
    """
    arrays = [np.asarray(x, np.float64) for x in (num_a, den_a, num_b, den_b)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise ValueError(f"paired difference needs four 1-D arrays of one length, got {[a.shape for a in arrays]}")
    na, da, nb, db = arrays
    counts = resample_counts(len(na), n_boot, seed).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = na.sum() / da.sum() - nb.sum() / db.sum() if da.sum() > 0 and db.sum() > 0 else float("nan")
        sa, sb = counts @ da, counts @ db
        ok = (sa > 0) & (sb > 0)
        samples = np.where(ok, (counts @ na) / np.where(ok, sa, 1.0) - (counts @ nb) / np.where(ok, sb, 1.0), np.nan)
    return _interval(value, samples, len(na), confidence)


class ItemFeatures:
    """Feature rows grouped by item (video): frames of a video for FID, one clip per video for FVD.

    ``stats(weights)`` gives the Gaussian statistics of the items repeated
    ``weights[i]`` times, which is what a bootstrap resample needs.
    """

    def __init__(self, per_item: Sequence[np.ndarray]):
        if not len(per_item):
            raise ValueError("no items")
        arrs = [np.atleast_2d(np.asarray(f, np.float64)) for f in per_item]
        dims = {a.shape[1] for a in arrs}
        if len(dims) != 1:
            raise ValueError(f"items have features of different dimensions: {sorted(dims)}")
        self.rows = np.concatenate(arrs, axis=0)
        self.item_of_row = np.repeat(np.arange(len(arrs)), [len(a) for a in arrs])
        self.n_items = len(arrs)

    @property
    def dim(self) -> int:
        return int(self.rows.shape[1])

    def stats(self, weights: np.ndarray | None = None) -> GaussianStats:
        if weights is None:
            return GaussianStats.from_features(self.rows)
        w = np.asarray(weights, np.float64)[self.item_of_row]
        keep = w > 0
        r, w = self.rows[keep], w[keep]
        return GaussianStats(float(w.sum()), w @ r, (r * w[:, None]).T @ r)


def bootstrap_frechet(
    a: ItemFeatures,
    b: ItemFeatures | GaussianStats,
    paired: bool = True,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Interval of the Fréchet distance between the items of ``a`` and of ``b``.

    ``paired``: item i of ``a`` (a generated video) belongs with item i of ``b``
    (its real video), so one draw of indices resamples both. Otherwise each set is
    resampled independently. ``b`` given as fixed ``GaussianStats`` (precomputed
    reference statistics) is not resampled.
    """
    stats_a = a.stats()
    fixed_b = isinstance(b, GaussianStats)
    stats_b = b if fixed_b else b.stats()
    value = stats_a.frechet(stats_b)
    counts_a = resample_counts(a.n_items, n_boot, seed)
    if fixed_b:
        counts_b = None
    elif paired:
        if b.n_items != a.n_items:
            raise ValueError(f"paired bootstrap needs one reference item per item: {a.n_items} vs {b.n_items}")
        counts_b = counts_a
    else:
        counts_b = resample_counts(b.n_items, n_boot, seed + 1)
    ref = FrechetReference(stats_b.mean, stats_b.cov) if counts_b is None else None
    samples = np.empty(n_boot)
    for k in range(n_boot):
        sa = a.stats(counts_a[k])
        if sa.n < 2:
            samples[k] = np.nan
        elif ref is not None:
            samples[k] = ref.distance(sa.mean, sa.cov)
        else:
            sb = b.stats(counts_b[k])  # type: ignore[union-attr,index]
            samples[k] = frechet_distance(sa.mean, sa.cov, sb.mean, sb.cov) if sb.n >= 2 else np.nan
    return _interval(value, samples, a.n_items, confidence)
