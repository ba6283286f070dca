"""The spectral formulas' one home (maths.spectrum) against independent numpy / scipy computations:
the rank measures on both of their paths (d x d moments, N x N Gram matrices) and LiDAR on both of
its paths (Cholesky factor, Woodbury identity)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from sparsehead.maths.spectrum import lidar, rank_measures


def entropy_rank(values: np.ndarray, eps: float = 0.0) -> float:
    p = values / values.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("shape", [(300, 24), (40, 96)])  # N > d: d x d moments; N < d: N x N Gram matrices
def test_rank_measures_match_numpy_svd(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * np.geomspace(3, 1e-3, shape[1]) + 0.5
    centred = np.linalg.svd(x - x.mean(0), compute_uv=False)
    uncentred = np.linalg.svd(x, compute_uv=False)
    eigs = np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1]
    got = rank_measures(x)
    assert got["effective_rank"] == pytest.approx(entropy_rank(centred[centred > 1e-9 * centred[0]]), rel=1e-9)
    assert got["rankme"] == pytest.approx(entropy_rank(uncentred, 1e-7), rel=1e-9)
    assert got["top_eig_share"] == pytest.approx(eigs[0] / eigs.sum(), rel=1e-9)
    assert len(got["eigenvalues"]) == shape[1]
    np.testing.assert_allclose(got["eigenvalues"][: min(shape) - 1], eigs[: min(shape) - 1], rtol=1e-8)


def lidar_as_written(e: np.ndarray, delta: float = 1e-4, eps: float = 1e-8) -> float:
    """Thilak et al. 2023 section 3, term by term: Sigma_w^-1/2 from its eigendecomposition."""
    n, q, d = e.shape
    mu_i = e.mean(1)
    mu = mu_i.mean(0)
    sigma_b = sum(np.outer(m - mu, m - mu) for m in mu_i) / (n - 1)
    sigma_w = sum(np.outer(v - mu_i[i], v - mu_i[i]) for i in range(n) for v in e[i]) / (n * (q - 1))
    sigma_w += delta * np.eye(d)
    w, u = np.linalg.eigh(sigma_w)
    root = u @ np.diag(w**-0.5) @ u.T
    lam = np.clip(np.linalg.eigvalsh(root @ sigma_b @ root), 0, None)
    return entropy_rank(lam, eps)


@pytest.mark.parametrize("n, q, d", [(60, 2, 8), (30, 3, 16), (10, 2, 50)])  # Cholesky, Cholesky, Woodbury
def test_lidar_matches_the_paper_formula_and_scipy_generalised_eigenvalues(n, q, d):
    rng = np.random.default_rng(n + d)
    images = rng.standard_normal((n, 1, d)) * np.geomspace(2, 0.01, d)
    e = images + 0.3 * rng.standard_normal((n, q, d))
    assert lidar(e) == pytest.approx(lidar_as_written(e), rel=1e-7)
    # the same eigenvalues as the generalised problem Sigma_b v = lambda Sigma_w v
    mu_i = e.mean(1)
    between = (mu_i - mu_i.mean(0)).T @ (mu_i - mu_i.mean(0)) / (n - 1)
    dev = (e - mu_i[:, None]).reshape(-1, d)
    lam = scipy.linalg.eigh(between, dev.T @ dev / (n * (q - 1)) + 1e-4 * np.eye(d), eigvals_only=True)
    assert lidar(e) == pytest.approx(entropy_rank(np.clip(lam, 0, None), 1e-8), rel=1e-7)


def test_lidar_counts_the_directions_that_tell_images_apart():
    rng = np.random.default_rng(1)
    views = 0.05 * rng.standard_normal((400, 2, 16))
    spread = rng.standard_normal((400, 1, 16)) + views  # images apart in all 16 directions
    two = rng.standard_normal((400, 1, 16)) * (np.arange(16) < 2) + views  # in 2 of them only
    assert lidar(spread) > 14 and 1.5 < lidar(two) < 3


def test_lidar_refuses_a_single_view():
    with pytest.raises(ValueError, match="views >= 2"):
        lidar(np.zeros((10, 1, 4)))
