"""Confidence intervals that resample items (videos), with a fixed seed.

The generic entry point is ``bootstrap_ci(statistic, n_items)``: ``statistic``
gets an array of item indices (drawn with replacement, repeats allowed) and
returns a number; the interval is the percentile interval of that number over
``n_boot`` resamples. The point value is the statistic on all items (index
``arange(n)``), not the mean of the resamples.

Cheap special cases avoid recomputing anything per item:
  * ``bootstrap_ratio``: statistics of the form sum(num_i) / sum(den_i), e.g. the
    official ObjMC flat mean (num_i = summed error of video i, den_i = its number
    of counted (entity, frame) pairs). Vectorised: one matrix product.
    ``paired_ratio_difference``: the difference of two such means on the same items.
  * ``frechet_interval``: FID/FVD. Per-item feature rows are kept (``ItemFeatures``);
    leaving items out is a vector of item weights, and the mean/covariance come from
    weighted sums of those rows (no feature is recomputed).

FID/FVD intervals are not percentile bootstraps. The Fréchet distance of N samples is
biased upwards by roughly c / N (the trace terms of the sample covariances), and a
resample with repeats has fewer distinct items, so its values sit *further* above the
truth: in an FVD-sized simulation (D = 400, 343 clips, true distance 16) the plug-in
value was about 44 and the percentile "95%" interval lay wholly above it, covering the
truth in 0 of 100 data sets. A basic bootstrap (reflecting the percentiles about the
point) corrects the bias only as far as the resamples estimate it, and they
underestimate it (coverage 85-88% in small simulations). The delete-a-group jackknife
removes a c / N bias exactly: with G groups of items, d_(k) the distance without group
k and d the full one, the estimate is d - (G - 1) (mean d_(k) - d), its standard error
sqrt((G - 1) / G * sum (d_(k) - mean)^2), and the interval estimate +- t_{G-1} se,
clipped at 0 (a distance is never negative). ``tests/eval/test_eval_intervals.py``
measures its coverage by simulation (docs/evaluation.md has the numbers). The point
value stays the plug-in distance, the number every paper reports; the interval is for
the true distance, so it may lie below the point value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from eval.frechet import FrechetReference, GaussianStats, frechet_distance

DEFAULT_N_BOOT = 1000
DEFAULT_SEED = 0
JACKKNIFE_GROUPS = 20
# The jackknife removes a bias c / N exactly; when D is comparable to N the Fréchet bias decays
# more slowly than 1 / N, the jackknife removes only part of it, and the truth lies below its
# estimate by up to this fraction of the bias it did remove (simulations: docs/evaluation.md).
JACKKNIFE_ALLOWANCE = 0.075
PERCENTILE = "percentile bootstrap over items"
JACKKNIFE = "grouped jackknife over items (bias-corrected, t interval)"


@dataclass(frozen=True)
class Interval:
    """A point value with its interval; ``method`` says how the interval was made."""

    value: float
    low: float
    high: float
    n: int  # items
    n_boot: int  # resamples (or jackknife replicates) that gave a finite statistic
    confidence: float
    method: str = PERCENTILE
    estimate: float | None = None  # the bias-corrected estimate the interval is centred on (jackknife)
    replicates: tuple[float, ...] = ()  # leave-group-out values (jackknife), for paired differences later
    note: str = ""  # why there is no interval (its ends are nan), e.g. NO_INTERVAL


NO_INTERVAL = "n too small for an interval (n < d)"


def no_interval(ci: Interval, samples: int, dim: int) -> Interval:
    """``ci`` with non-finite (nan) ends and the reason: fewer samples than feature dimensions.

    The contract with every caller: an interval that cannot be given has nan ends. The point
    value, the jackknife estimate and the replicates stay (a paired difference still uses them).
    """
    from dataclasses import replace

    note = f"{NO_INTERVAL}: {samples} samples < {dim} dimensions"
    return replace(ci, low=float("nan"), high=float("nan"), method=f"{ci.method}: no interval, {NO_INTERVAL}", note=note)


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


def _ratio_parts(numerators, denominators) -> tuple[np.ndarray, np.ndarray]:
    num = np.asarray(numerators, np.float64)
    den = np.asarray(denominators, np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"numerators and denominators must be 1-D of one length, got {num.shape} and {den.shape}")
    return num, den


def bootstrap_ratio(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Interval of sum(num) / sum(den) resampling items; e.g. ObjMC's flat mean over pairs."""
    num, den = _ratio_parts(numerators, denominators)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = num.sum() / den.sum() if den.sum() > 0 else float("nan")
        counts = resample_counts(len(num), n_boot, seed).astype(np.float64)
        d = counts @ den
        samples = np.where(d > 0, (counts @ num) / np.where(d > 0, d, 1.0), np.nan)
    return _interval(value, samples, len(num), confidence)


BCA = "BCa bootstrap over items"
STUDENTIZED = "studentised bootstrap over items (bootstrap-t)"


def _ratio_se(num: np.ndarray, den: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ratios sum(w num) / sum(w den) of weighted items (rows of ``counts``) and their delta-method
    standard errors sqrt(n / (n - 1) * sum w (num - R den)^2) / sum(w den)."""
    n = counts.shape[1]
    sd = counts @ den
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(sd > 0, (counts @ num) / np.where(sd > 0, sd, 1.0), np.nan)
        resid2 = counts @ (num**2) - 2 * r * (counts @ (num * den)) + r**2 * (counts @ (den**2))
        se = np.sqrt(np.clip(resid2, 0.0, None) * n / max(n - 1, 1)) / sd
    return r, se


def studentized_ratio(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Bootstrap-t interval of sum(num) / sum(den) over items (entities nested in their item).

    Each resample's ratio is studentised by its own delta-method standard error, t* = (R* - R)
    / se*; the interval is (R - q_hi se, R - q_lo se) with q the t* quantiles. Unlike the
    percentile interval it corrects for skew and for the standard error varying with the
    value, which heavy-tailed errors (off-frame points) cause (tests/eval/test_interval_coverage.py).
    Fewer than 3 items, or no spread: nan ends.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    num, den = _ratio_parts(numerators, denominators)
    n = len(num)
    (value,), (se,) = _ratio_se(num, den, np.ones((1, n)))
    if n < 3 or not np.isfinite(se) or se <= 0:
        return Interval(float(value), float("nan"), float("nan"), n, 0, confidence, STUDENTIZED)
    counts = resample_counts(n, n_boot, seed).astype(np.float64)
    r, s = _ratio_se(num, den, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (r - value) / s
    t = t[np.isfinite(t)]
    if len(t) < 10:
        return Interval(float(value), float("nan"), float("nan"), n, len(t), confidence, STUDENTIZED)
    alpha = (1.0 - confidence) / 2.0
    q_lo, q_hi = np.quantile(t, [alpha, 1.0 - alpha])
    return Interval(float(value), float(value - q_hi * se), float(value - q_lo * se), n, len(t), confidence, STUDENTIZED)


def bca_ratio(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """BCa interval of sum(num) / sum(den) over items: percentiles shifted by the bias z0 (share of
    resamples below the value) and the acceleration a (skew of the leave-one-item-out ratios)."""
    from scipy.stats import norm

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    num, den = _ratio_parts(numerators, denominators)
    n = len(num)
    (value,), _ = _ratio_se(num, den, np.ones((1, n)))
    counts = resample_counts(n, n_boot, seed).astype(np.float64)
    r, _ = _ratio_se(num, den, counts)
    r = r[np.isfinite(r)]
    if n < 3 or len(r) < 10 or np.ptp(r) == 0:
        return Interval(float(value), float("nan"), float("nan"), n, len(r), confidence, BCA)
    jack, _ = _ratio_se(num, den, 1.0 - np.eye(n))
    d = jack.mean() - jack
    a = float((d**3).sum() / (6.0 * ((d**2).sum()) ** 1.5)) if (d**2).sum() > 0 else 0.0
    frac = np.clip((r < value).mean() + 0.5 * (r == value).mean(), 1.0 / len(r), 1.0 - 1.0 / len(r))
    z0 = norm.ppf(frac)
    z = norm.ppf([(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    p = norm.cdf(z0 + (z0 + z) / (1.0 - a * (z0 + z)))
    lo, hi = np.quantile(r, p)
    return Interval(float(value), float(lo), float(hi), n, len(r), confidence, BCA)


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


# --------------------------------------------------------------------------- jackknife (FID / FVD)


def jackknife_groups(n_items: int, groups: int = JACKKNIFE_GROUPS) -> np.ndarray:
    """The group of each item, items in a fixed order: ``i mod G`` with ``G = min(groups, n)``.

    Two checkpoints scored on the same items (in the same order) get the same groups, so
    their leave-group-out values pair up (``paired_jackknife_difference``).
    """
    if n_items < 1:
        raise ValueError("a jackknife needs at least one item")
    return np.arange(n_items) % max(1, min(int(groups), n_items))


def jackknife_interval(
    value: float,
    replicates: Sequence[float] | np.ndarray,
    n: int,
    confidence: float = 0.95,
    floor: float | None = 0.0,
    allowance: float = JACKKNIFE_ALLOWANCE,
) -> Interval:
    """Bias-corrected delete-a-group jackknife interval from the G leave-group-out values.

    bias = (G - 1) (mean - value); estimate = value - bias; se = sqrt((G - 1) / G * sum
    (r - mean)^2); interval = estimate +- t_{G-1} se, its lower end lowered by
    ``allowance * bias`` (the part of a slower-than-1/N bias the jackknife misses; for a
    difference, ``floor=None``, both ends widen by ``allowance * |bias|``, as the sign of
    what is missed is unknown), then raised to ``floor`` (0 for a distance). Fewer than 2
    finite replicates: no interval (nan).
    """
    from scipy.stats import t as student_t

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    r = np.asarray(replicates, np.float64)
    G = len(r)
    if G < 2 or not np.isfinite(r).all() or not np.isfinite(value):
        return Interval(float(value), float("nan"), float("nan"), int(n), int(np.isfinite(r).sum()), confidence, JACKKNIFE, None, tuple(map(float, r)))
    mean = r.mean()
    bias = (G - 1) * (mean - value)
    estimate = value - bias
    se = float(np.sqrt((G - 1) / G * ((r - mean) ** 2).sum()))
    q = float(student_t.ppf(0.5 + confidence / 2, G - 1))
    lo, hi = estimate - q * se, estimate + q * se
    if floor is None:
        lo, hi = lo - allowance * abs(bias), hi + allowance * abs(bias)
    else:
        lo = lo - allowance * max(bias, 0.0)
        lo, hi = max(lo, floor), max(hi, floor)
    return Interval(float(value), float(lo), float(hi), int(n), G, confidence, JACKKNIFE, float(estimate), tuple(map(float, r)))


def frechet_interval(
    a: ItemFeatures,
    b: ItemFeatures | GaussianStats,
    groups: int = JACKKNIFE_GROUPS,
    confidence: float = 0.95,
    ddof: int = 1,
    min_ratio: float = 1.0,
) -> Interval:
    """FID/FVD with its bias-corrected grouped-jackknife interval (module docstring).

    ``a`` holds the generated items; ``b`` their real counterparts, item i with item i
    (one reference per item; both sides lose the same group), or fixed ``GaussianStats``
    (precomputed reference statistics, never left out). ``ddof``: 1 for FID and the
    official FVD, 0 for StyleGAN-V's FVD.

    With fewer feature rows than dimensions on either side (``min_ratio``: rows / D below
    1) the sample covariances are singular, the bias is not c / N, and no interval covers
    (tests/eval/test_interval_coverage.py): the result has nan ends and ``note`` says why.
    """
    fixed_b = isinstance(b, GaussianStats)
    if not fixed_b and b.n_items != a.n_items:
        raise ValueError(f"the jackknife pairs item i with item i: {a.n_items} generated vs {b.n_items} real items")
    ref = b if fixed_b else b.stats()
    full = a.stats()
    if full.n < 2 or ref.n < 2:  # no covariance, no distance: say so instead of failing
        return jackknife_interval(float("nan"), [], a.n_items, confidence)
    ref_cov = ref.covariance(ddof)
    value = frechet_distance(full.mean, full.covariance(ddof), ref.mean, ref_cov)
    g = jackknife_groups(a.n_items, groups)
    G = int(g.max()) + 1
    if G < 2:
        return jackknife_interval(value, [], a.n_items, confidence)
    fixed = FrechetReference(ref.mean, ref_cov) if fixed_b else None
    reps = np.empty(G)
    for k in range(G):
        w = (g != k).astype(np.float64)
        sa = a.stats(w)
        sb = None if fixed_b else b.stats(w)  # type: ignore[union-attr]
        if sa.n < 2 or (sb is not None and sb.n < 2):
            reps[k] = np.nan
        elif fixed is not None:
            reps[k] = fixed.distance(sa.mean, sa.covariance(ddof))
        else:
            reps[k] = frechet_distance(sa.mean, sa.covariance(ddof), sb.mean, sb.covariance(ddof))  # type: ignore[union-attr]
    ci = jackknife_interval(value, reps, a.n_items, confidence)
    samples = int(min(full.n, ref.n))
    return no_interval(ci, samples, a.dim) if samples < min_ratio * a.dim else ci


def kid_interval(gen: ItemFeatures | Sequence[np.ndarray], real: ItemFeatures | Sequence[np.ndarray], confidence: float = 0.95) -> Interval:
    """KID (``eval.kernel``) with its jackknife-over-items t interval: honest at 12 items of 112-d
    features, where the Fréchet distance has no interval. ``gen``/``real``: per-item feature rows."""
    from eval.kernel import KID_METHOD, kid_jackknife

    def per_item(f) -> list[np.ndarray]:
        if isinstance(f, ItemFeatures):
            return [f.rows[f.item_of_row == i] for i in range(f.n_items)]
        return list(f)

    g = per_item(gen)
    value, lo, hi, reps = kid_jackknife(g, per_item(real), confidence)
    return Interval(value, lo, hi, len(g), int(np.isfinite(reps).sum()), confidence, KID_METHOD, None, tuple(map(float, reps)))


def paired_jackknife_difference(
    value_a: float, replicates_a: Sequence[float], value_b: float, replicates_b: Sequence[float], n: int, confidence: float = 0.95
) -> Interval:
    """Interval of ``a - b`` from two jackknifes on the same items and groups (e.g. two checkpoints' FVD).

    The leave-group-out differences are the jackknife replicates of the difference, so
    what the items share (the real clips, a hard scene) cancels. "a is better" (lower)
    is supported when the whole interval lies below 0.
    """
    ra, rb = np.asarray(replicates_a, np.float64), np.asarray(replicates_b, np.float64)
    if ra.shape != rb.shape:
        return jackknife_interval(value_a - value_b, [], n, confidence, floor=None)
    return jackknife_interval(value_a - value_b, ra - rb, n, confidence, floor=None)
