"""KID: the unbiased squared MMD with the cubic polynomial kernel, and its item jackknife interval.

Binkowski et al.'s Kernel Inception Distance (as clean-fid computes it): k(x, y) =
(x . y / D + 1)^3 and the unbiased U-statistic

    MMD^2_u = mean_{a != b} k(x_a, x_b) + mean_{a != b} k(y_a, y_b) - 2 mean_{a, b} k(x_a, y_b)

on feature rows x (generated) and y (real). Unlike the Fréchet distance it has no bias
at small N, so its leave-one-item-out jackknife gives an honest interval where FID/FVD
have none (fewer samples than dimensions; tests/eval/test_interval_coverage.py measures it).
Rows are grouped by item (a video's frames); item i's rows leave both sides together.
All leave-one-out sums come from per-item block sums of the three kernel matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KID_METHOD = "jackknife over items of the unbiased KID (t interval)"


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _one_hot(items: np.ndarray, n_items: int) -> np.ndarray:
    g = np.zeros((len(items), n_items))
    g[np.arange(len(items)), items] = 1.0
    return g


def _within(k: np.ndarray, g: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Off-diagonal sum of a square kernel matrix, its per-item row sums and within-item block sums."""
    k0 = k - np.diag(np.diag(k))
    rows = g.T @ k0.sum(axis=1)
    blocks = np.einsum("ai,ab,bi->i", g, k0, g)
    return float(k0.sum()), rows, blocks


def kid_jackknife(
    gen: Sequence[np.ndarray], real: Sequence[np.ndarray], confidence: float = 0.95
) -> tuple[float, float, float, np.ndarray]:
    """(KID, low, high, leave-one-item-out values) of per-item feature rows, item i with item i.

    Fewer than 3 items, or an item set that leaves fewer than 2 rows a side: nan ends.
    """
    from scipy.stats import t as student_t

    if len(gen) != len(real):
        raise ValueError(f"KID pairs item i with item i: {len(gen)} generated vs {len(real)} real items")
    xs = [np.atleast_2d(np.asarray(f, np.float64)) for f in gen]
    ys = [np.atleast_2d(np.asarray(f, np.float64)) for f in real]
    x, y = np.concatenate(xs), np.concatenate(ys)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"KID needs features of one dimension, got {x.shape[1]} and {y.shape[1]}")
    n = len(xs)
    gx = _one_hot(np.repeat(np.arange(n), [len(a) for a in xs]), n)
    gy = _one_hot(np.repeat(np.arange(n), [len(a) for a in ys]), n)
    nx, ny = gx.sum(axis=0), gy.sum(axis=0)
    Nx, Ny = len(x), len(y)
    if Nx < 2 or Ny < 2:
        return float("nan"), float("nan"), float("nan"), np.zeros(0)
    sxx, rx, wx = _within(polynomial_kernel(x, x), gx)
    syy, ry, wy = _within(polynomial_kernel(y, y), gy)
    kxy = polynomial_kernel(x, y)
    sxy = float(kxy.sum())
    cx, cy = gx.T @ kxy.sum(axis=1), gy.T @ kxy.sum(axis=0)
    bxy = np.einsum("ai,ab,bi->i", gx, kxy, gy)
    value = sxx / (Nx * (Nx - 1)) + syy / (Ny * (Ny - 1)) - 2.0 * sxy / (Nx * Ny)
    mx, my = Nx - nx, Ny - ny
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (sxx - 2 * rx + wx) / (mx * (mx - 1)) + (syy - 2 * ry + wy) / (my * (my - 1)) - 2.0 * (sxy - cx - cy + bxy) / (mx * my)
    if n < 3 or not np.isfinite(reps).all():
        return float(value), float("nan"), float("nan"), reps
    se = float(np.sqrt((n - 1) / n * ((reps - reps.mean()) ** 2).sum()))
    q = float(student_t.ppf(0.5 + confidence / 2, n - 1))
    return float(value), float(value - q * se), float(value + q * se), reps
