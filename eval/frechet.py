"""Fréchet distance between Gaussians, and a streaming mean/covariance accumulator.

FID and FVD are both ``frechet_distance(mu_a, cov_a, mu_b, cov_b)`` on feature
statistics; the feature extractor differs (see ``eval.features``), and so does the
covariance's divisor: FID divides by N - 1 (``numpy.cov``, as pytorch-fid and
clean-fid), StyleGAN-V's FVD by N (its ``FeatureStats``), hence ``ddof``.

    d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2})

The trace of the matrix square root is computed without a general ``sqrtm``:
with A = S_a^{1/2} (symmetric, from an eigendecomposition), S_a S_b is similar to
the symmetric PSD matrix A S_b A, so tr((S_a S_b)^{1/2}) = sum of the square roots
of the eigenvalues of A S_b A. Everything stays real and symmetric, tiny negative
eigenvalues from round-off are clipped to 0, and singular covariances (fewer
samples than dimensions) need no ``eps * I`` offset. Results agree with the
``scipy.linalg.sqrtm`` formulation used by pytorch-fid / clean-fid to round-off.

``GaussianStats`` holds sufficient statistics (count, sum, sum of outer products)
in float64: memory is O(D^2) whatever the number of samples, two accumulators
merge by addition (one per worker, then ``merge``), and per-item accumulators can
be re-weighted for the bootstrap (``eval.bootstrap``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _sym_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix (negative round-off eigenvalues clipped)."""
    s = 0.5 * (s + s.T)
    w, v = np.linalg.eigh(s)
    w = np.sqrt(np.clip(w, 0.0, None))
    return (v * w) @ v.T


def trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """tr((cov_a cov_b)^{1/2}) for symmetric PSD matrices, via a symmetric eigenproblem."""
    a = _sym_sqrt(np.asarray(cov_a, np.float64))
    m = a @ np.asarray(cov_b, np.float64) @ a
    m = 0.5 * (m + m.T)
    ev = np.linalg.eigvalsh(m)
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu_a, cov_a) and N(mu_b, cov_b).

    This is the number FID/FVD report (no square root is taken, by convention).
    """
    mu_a = np.atleast_1d(np.asarray(mu_a, np.float64))
    mu_b = np.atleast_1d(np.asarray(mu_b, np.float64))
    cov_a = np.atleast_2d(np.asarray(cov_a, np.float64))
    cov_b = np.atleast_2d(np.asarray(cov_b, np.float64))
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (len(mu_a), len(mu_a)):
        raise ValueError(
            f"Fréchet distance needs matching shapes: mu {mu_a.shape} vs {mu_b.shape}, cov {cov_a.shape} vs {cov_b.shape}"
        )
    diff = mu_a - mu_b
    tr = np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt_product(cov_a, cov_b)
    # Round-off can push an exact 0 slightly negative; the distance is >= 0.
    return float(max(diff @ diff + tr, 0.0))


class FrechetReference:
    """A fixed reference Gaussian (e.g. the real set of a suite) with its covariance's square root
    computed once, so each distance to it costs one symmetric eigenvalue problem instead of two."""

    def __init__(self, mu: np.ndarray, cov: np.ndarray):
        self.mu = np.atleast_1d(np.asarray(mu, np.float64))
        self.cov = np.atleast_2d(np.asarray(cov, np.float64))
        self._sqrt = _sym_sqrt(self.cov)
        self._trace = float(np.trace(self.cov))

    def distance(self, mu: np.ndarray, cov: np.ndarray) -> float:
        mu = np.atleast_1d(np.asarray(mu, np.float64))
        cov = np.atleast_2d(np.asarray(cov, np.float64))
        if mu.shape != self.mu.shape or cov.shape != self.cov.shape:
            raise ValueError(f"Fréchet distance needs matching shapes: mu {mu.shape} vs {self.mu.shape}, cov {cov.shape} vs {self.cov.shape}")
        m = self._sqrt @ cov @ self._sqrt
        ev = np.linalg.eigvalsh(0.5 * (m + m.T))
        diff = mu - self.mu
        d = diff @ diff + np.trace(cov) + self._trace - 2.0 * float(np.sqrt(np.clip(ev, 0.0, None)).sum())
        return float(max(d, 0.0))


@dataclass
class GaussianStats:
    """Streaming sufficient statistics of D-dimensional samples, float64.

    ``n`` (count), ``total`` (sum, D) and ``outer`` (sum of x x^T, D x D).
    Adding samples, merging accumulators and weighting per-item accumulators are
    all sums, so results do not depend on batching or on the order of merges.
    """

    n: float
    total: np.ndarray
    outer: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> GaussianStats:
        return cls(0.0, np.zeros(dim, np.float64), np.zeros((dim, dim), np.float64))

    @classmethod
    def from_features(cls, feats: np.ndarray) -> GaussianStats:
        f = np.asarray(feats, np.float64)
        if f.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {f.shape}")
        return cls(float(len(f)), f.sum(axis=0), f.T @ f)

    @property
    def dim(self) -> int:
        return int(self.total.shape[0])

    def update(self, feats: np.ndarray) -> GaussianStats:
        """Add a batch (N, D) in place; returns self."""
        f = np.asarray(feats, np.float64)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"features must be (N, {self.dim}), got shape {f.shape}")
        self.n += float(len(f))
        self.total += f.sum(axis=0)
        self.outer += f.T @ f
        return self

    def merge(self, other: GaussianStats) -> GaussianStats:
        """A new accumulator holding both sets of samples."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {self.dim} and {other.dim}")
        return GaussianStats(self.n + other.n, self.total + other.total, self.outer + other.outer)

    __add__ = merge

    @property
    def mean(self) -> np.ndarray:
        if self.n <= 0:
            raise ValueError("no samples accumulated: the mean is undefined")
        return self.total / self.n

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (ddof=1), as numpy.cov, pytorch-fid and clean-fid use."""
        return self.covariance(1)

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """Covariance dividing by ``n - ddof``: 1 for FID (pytorch-fid, clean-fid), 0 for StyleGAN-V's FVD."""
        if ddof not in (0, 1):
            raise ValueError(f"ddof must be 0 or 1, got {ddof}")
        if self.n < 2:
            raise ValueError(f"{self.n:g} sample(s) accumulated: a covariance needs at least 2")
        mu = self.total / self.n
        c = (self.outer - self.n * np.outer(mu, mu)) / (self.n - float(ddof))
        return 0.5 * (c + c.T)

    def frechet(self, other: GaussianStats, ddof: int = 1) -> float:
        return frechet_distance(self.mean, self.covariance(ddof), other.mean, other.covariance(ddof))

    def save(self, path: str | Path) -> None:
        np.savez(path, n=np.float64(self.n), total=self.total, outer=self.outer)

    @classmethod
    def load(cls, path: str | Path) -> GaussianStats:
        with np.load(path) as z:
            return cls(float(z["n"]), z["total"].astype(np.float64), z["outer"].astype(np.float64))


def merge_all(stats: list[GaussianStats]) -> GaussianStats:
    if not stats:
        raise ValueError("no statistics to merge")
    out = GaussianStats(0.0, np.zeros_like(stats[0].total), np.zeros_like(stats[0].outer))
    for s in stats:
        out = out.merge(s)
    return out
