"""Frechet distance (closed forms, scipy sqrtm agreement, singular inputs, errors) and KID."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from evals.bench import bench_frechet, frechet_distance_scipy_sqrtm
from evals.frechet import (FixedGaussian, frechet_distance, frechet_from_stats, kid,
                           mmd2_unbiased)
from evals.stats import FeatureStats


def gaussian_features(n, dim, rng, shift=0.0, scale=1.0):
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    return (rng.standard_normal((n, dim)) @ mixing) * scale + shift + rng.standard_normal(dim)


def moments(features):
    return features.mean(axis=0), np.cov(features, rowvar=False)


def exact_trace_sqrt(x1, x2):
    """Tr((S1 S2)^(1/2)) from the data: the nuclear norm of the small n1 x n2 matrix A^T B."""
    a = (x1 - x1.mean(axis=0)) / np.sqrt(len(x1) - 1)
    b = (x2 - x2.mean(axis=0)) / np.sqrt(len(x2) - 1)
    return np.linalg.svd(a @ b.T, compute_uv=False).sum()


def random_orthogonal(dim, rng):
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def test_identical_statistics_give_zero():
    mu, sigma = moments(gaussian_features(500, 32, np.random.default_rng(0)))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_diagonal_covariances_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    a, b = rng.uniform(0.1, 3.0, 20), rng.uniform(0.1, 3.0, 20)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_commuting_covariances_closed_form():
    rng = np.random.default_rng(2)
    basis = random_orthogonal(40, rng)
    a, b = rng.uniform(0.01, 5.0, 40), rng.uniform(0.01, 5.0, 40)
    sigma1, sigma2 = (basis * a) @ basis.T, (basis * b) @ basis.T
    mu1, mu2 = rng.standard_normal(40), rng.standard_normal(40)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("dim", [64, 256])
def test_symmetric_and_equal_to_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    mu1, sigma1 = moments(gaussian_features(3 * dim, dim, rng))
    mu2, sigma2 = moments(gaussian_features(3 * dim, dim, rng, shift=0.3, scale=1.2))
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(ours, rel=1e-10)
    assert ours == pytest.approx(frechet_distance_scipy_sqrtm(mu1, sigma1, mu2, sigma2), rel=1e-6)


@pytest.mark.parametrize("n1, n2", [(40, 300), (300, 40), (60, 90)])
def test_singular_covariances_fewer_samples_than_dims(n1, n2):
    rng = np.random.default_rng(n1 + n2)
    dim = 128
    x1 = gaussian_features(n1, dim, rng, shift=4.0)
    x2 = gaussian_features(n2, dim, rng, shift=4.5, scale=1.3)
    (mu1, sigma1), (mu2, sigma2) = moments(x1), moments(x2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # round-off negatives are clipped silently
        ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert np.isfinite(ours)
    diff = mu1 - mu2
    exact = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * exact_trace_sqrt(x1, x2)
    assert ours == pytest.approx(exact, rel=1e-10)
    assert ours == pytest.approx(frechet_distance_scipy_sqrtm(mu1, sigma1, mu2, sigma2), rel=1e-6)


@pytest.mark.parametrize("n_fixed, n_other", [(40, 300), (40, 30), (300, 40), (300, 500)])
def test_fixed_gaussian_gives_the_exact_distance(n_fixed, n_other):
    """A reference held fixed (the bootstrap's): low rank uses its factor, full rank falls back
    to frechet_distance; both equal the exact value from the data."""
    rng = np.random.default_rng(n_fixed * n_other)
    dim = 128
    x_ref = gaussian_features(n_fixed, dim, rng, shift=4.0)
    fixed = FixedGaussian(*moments(x_ref))
    assert fixed.low_rank == (n_fixed - 1 <= dim // 2)
    for scale in (1.0, 1.3):
        x = gaussian_features(n_other, dim, rng, shift=4.5, scale=scale)
        mu, sigma = moments(x)
        diff = mu - fixed.mu
        exact = diff @ diff + np.trace(sigma) + fixed.trace - 2 * exact_trace_sqrt(x, x_ref)
        assert fixed.distance(mu, sigma) == pytest.approx(exact, rel=1e-10)


@pytest.mark.parametrize("which", ["sigma1", "sigma2"])
def test_clearly_negative_eigenvalues_warn_and_stay_finite(which):
    rng = np.random.default_rng(3)
    basis = random_orthogonal(16, rng)
    good = (basis * rng.uniform(0.5, 2.0, 16)) @ basis.T
    values = rng.uniform(0.5, 2.0, 16)
    values[:2] = -0.5
    indefinite = (basis * values) @ basis.T
    sigmas = {"sigma1": indefinite, "sigma2": good}
    if which == "sigma2":
        sigmas = {"sigma1": good, "sigma2": indefinite}
    with pytest.warns(RuntimeWarning, match="negative eigenvalue"):
        value = frechet_distance(np.zeros(16), sigmas["sigma1"], np.ones(16), sigmas["sigma2"])
    assert np.isfinite(value)


@pytest.mark.parametrize("arg, bad", [(0, np.nan), (1, np.inf), (2, -np.inf), (3, np.nan)])
def test_non_finite_inputs_raise_naming_the_argument(arg, bad):
    args = [np.zeros(4), np.eye(4), np.zeros(4), np.eye(4)]
    args[arg] = args[arg].copy()
    args[arg].flat[0] = bad
    name = ["mu1", "sigma1", "mu2", "sigma2"][arg]
    with pytest.raises(ValueError, match=f"{name} contains NaN or Inf"):
        frechet_distance(*args)


def test_shape_and_symmetry_errors():
    eye = np.eye(4)
    with pytest.raises(ValueError, match="square"):
        frechet_distance(np.zeros(4), np.zeros((4, 3)), np.zeros(4), eye)
    with pytest.raises(ValueError, match="mismatch"):
        frechet_distance(np.zeros(4), eye, np.zeros(4), np.eye(5))
    with pytest.raises(ValueError, match="mismatch"):
        frechet_distance(np.zeros(4), eye, np.zeros(3), eye)
    with pytest.raises(ValueError, match="1-D"):
        frechet_distance(np.zeros((4, 1)), eye, np.zeros(4), eye)
    skewed = eye.copy()
    skewed[0, 1] = 0.5
    with pytest.raises(ValueError, match="sigma2 is not symmetric"):
        frechet_distance(np.zeros(4), eye, np.zeros(4), skewed)
    nearly = eye + 1e-9 * np.random.default_rng(0).standard_normal((4, 4))
    assert np.isfinite(frechet_distance(np.zeros(4), nearly, np.zeros(4), eye))


def test_frechet_from_stats_matches_numpy_moments_and_checks_detector():
    rng = np.random.default_rng(4)
    x1, x2 = gaussian_features(200, 12, rng), gaussian_features(150, 12, rng, shift=1.0)
    a, b = FeatureStats(12, 4, {"detector": "d"}), FeatureStats(12, 4, {"detector": "d"})
    a.update(x1, np.arange(200) // 2)
    b.update(x2, np.arange(150) // 3)
    expected = frechet_distance(*moments(x1), *moments(x2))
    assert frechet_from_stats(a, b) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="detectors"):
        frechet_from_stats(a, FeatureStats(12, 4, {"detector": "other"}))


def brute_force_mmd2(x, y):
    def k(u, v):
        return (u @ v / len(u) + 1.0) ** 3
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_mmd2_matches_its_definition():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((9, 5)), rng.standard_normal((9, 5)) + 0.5
    assert mmd2_unbiased(x, y) == pytest.approx(brute_force_mmd2(x, y), rel=1e-12)


def test_kid_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((1000, 16)), rng.standard_normal((1000, 16))
    same_mean, same_std = kid(a, b, subset_size=200, n_subsets=50, seed=0)
    shifted_mean, _ = kid(a, b + 1.0, subset_size=200, n_subsets=50, seed=0)
    assert abs(same_mean) < 3 * same_std
    assert shifted_mean > 20 * same_std
    assert shifted_mean > 0.1


def plug_in_mmd2(x, y):
    """The biased (V-statistic) estimate: within-set sums keep i == j."""
    m = len(x)
    def k(u, v):
        return (u @ v.T / u.shape[1] + 1.0) ** 3
    return float((k(x, x).sum() + k(y, y).sum() - 2 * k(x, y).sum()) / (m * m))


def test_kid_is_unbiased_where_the_plug_in_estimate_is_not():
    rng = np.random.default_rng(7)
    pairs = [(rng.standard_normal((30, 8)), rng.standard_normal((30, 8))) for _ in range(60)]
    unbiased = np.array([mmd2_unbiased(x, y) for x, y in pairs])
    plug_in = np.array([plug_in_mmd2(x, y) for x, y in pairs])
    standard_error = unbiased.std(ddof=1) / np.sqrt(len(pairs))
    assert abs(unbiased.mean()) < 4 * standard_error
    assert plug_in.mean() > 10 * standard_error


def test_kid_is_reproducible_by_seed():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((300, 8)), rng.standard_normal((300, 8)) + 0.2
    assert kid(a, b, 100, 10, seed=3) == kid(a, b, 100, 10, seed=3)
    assert kid(a, b, 100, 10, seed=3) != kid(a, b, 100, 10, seed=4)


def test_kid_rejects_sets_smaller_than_the_subset():
    rng = np.random.default_rng(9)
    with pytest.raises(ValueError, match=r"features_b has 50 rows.*subset_size <= 50"):
        kid(rng.standard_normal((100, 4)), rng.standard_normal((50, 4)), subset_size=80)


def test_bench_frechet_reports_agreement_and_timings_at_small_dim():
    report = bench_frechet(dim=32, n=80, seed=1, repeats=2)
    assert report["frechet_rel_diff"] < 1e-6
    assert report["frechet_speedup_vs_scipy_d32"] > 0
    assert report["frechet_ours_s"] > 0 and report["frechet_scipy_s"] > 0
    assert {"scipy_version", "numpy_version", "blas"} <= set(report)
