"""Fréchet distance against closed forms, and the streaming accumulator against numpy."""

import numpy as np
import pytest
import scipy.linalg

from eval.frechet import FrechetReference, GaussianStats, frechet_distance, merge_all, trace_sqrt_product


def test_diagonal_closed_form():
    rng = np.random.default_rng(1)
    D = 16
    mu_a, mu_b = rng.normal(size=D), rng.normal(size=D)
    va, vb = rng.uniform(0.1, 3.0, D), rng.uniform(0.1, 3.0, D)
    # W2^2 between diagonal Gaussians: |mu_a - mu_b|^2 + sum (sqrt(va) - sqrt(vb))^2
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
    assert frechet_distance(mu_a, np.diag(va), mu_b, np.diag(vb)) == pytest.approx(expected, rel=1e-10)


def test_one_dimensional_and_scaled_covariance():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # S_b = c^2 S_a: tr(S_a) + c^2 tr(S_a) - 2 c tr(S_a) = (1 - c)^2 tr(S_a)
    rng = np.random.default_rng(2)
    A = rng.normal(size=(8, 8))
    S = A @ A.T
    assert frechet_distance(np.zeros(8), S, np.zeros(8), 9.0 * S) == pytest.approx(4.0 * np.trace(S), rel=1e-9)


def test_rotation_of_same_spectrum():
    # Same covariance rotated: d^2 = tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)), compared with scipy's sqrtm.
    rng = np.random.default_rng(3)
    D = 10
    A = rng.normal(size=(D, D))
    Sa = A @ A.T + 0.1 * np.eye(D)
    Q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    Sb = Q @ Sa @ Q.T
    ref = np.trace(Sa) + np.trace(Sb) - 2 * np.real(np.trace(scipy.linalg.sqrtm(Sa @ Sb)))
    assert frechet_distance(np.zeros(D), Sa, np.zeros(D), Sb) == pytest.approx(ref, rel=1e-8)
    assert trace_sqrt_product(Sa, Sb) == pytest.approx(trace_sqrt_product(Sb, Sa), rel=1e-10)


def test_identical_is_zero_and_symmetric_and_singular_ok():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 50))  # fewer samples than dimensions: singular covariance
    y = rng.normal(size=(30, 50)) + 0.5
    sx, sy = GaussianStats.from_features(x), GaussianStats.from_features(y)
    assert sx.frechet(sx) == pytest.approx(0.0, abs=1e-8)
    assert sx.frechet(sy) == pytest.approx(sy.frechet(sx), rel=1e-6)  # sqrt of ~0 eigenvalues amplifies round-off
    assert np.isfinite(sx.frechet(sy)) and sx.frechet(sy) > 0


def test_matches_clean_fid_formula():
    from cleanfid.fid import frechet_distance as cleanfid_fd

    rng = np.random.default_rng(5)
    a = rng.normal(size=(300, 40))
    b = rng.normal(size=(250, 40)) @ rng.normal(size=(40, 40)) * 0.3 + 0.2
    sa, sb = GaussianStats.from_features(a), GaussianStats.from_features(b)
    assert sa.frechet(sb) == pytest.approx(cleanfid_fd(sa.mean, sa.cov, sb.mean, sb.cov), rel=1e-7)
    # A fixed reference (real-set statistics computed once) gives the same number.
    assert FrechetReference(sb.mean, sb.cov).distance(sa.mean, sa.cov) == pytest.approx(sa.frechet(sb), rel=1e-9)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="matching shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_streaming_equals_numpy_and_merges(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1000, 12)) * rng.uniform(0.5, 2, 12) + rng.normal(size=12)
    acc = GaussianStats.empty(12)
    for s in range(0, 1000, 37):  # uneven batches
        acc.update(x[s : s + 37])
    np.testing.assert_allclose(acc.mean, x.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(acc.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
    # Workers merge by addition, in any order.
    parts = [GaussianStats.from_features(x[i::3]) for i in range(3)]
    merged = merge_all(parts[::-1])
    np.testing.assert_allclose(merged.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
    assert merged.n == 1000
    # Memory does not grow with the number of samples: the state is n, a D vector and a D x D matrix.
    assert acc.total.shape == (12,) and acc.outer.shape == (12, 12) and acc.outer.dtype == np.float64
    acc.save(tmp_path / "s.npz")
    back = GaussianStats.load(tmp_path / "s.npz")
    assert back.n == acc.n and np.array_equal(back.outer, acc.outer)


def test_accumulator_errors():
    acc = GaussianStats.empty(3)
    with pytest.raises(ValueError):
        acc.mean
    acc.update(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        acc.cov
    with pytest.raises(ValueError):
        acc.update(np.ones((2, 4)))
