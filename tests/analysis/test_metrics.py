"""Collapse diagnostics against independent computations (numpy / scikit-learn / hand-derived values)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from sparsehead.analysis import (
    alignment,
    alpha_req,
    centre_divergence,
    collapsed_dimensions,
    delta_mu,
    diagnostics,
    effective_rank,
    head_sparsity,
    min_max_ratio,
    nearest_centre_accuracy,
    power_law_exponent,
    rankme,
    spectral_summary,
    spectrum,
    uniformity,
)
from sparsehead.analysis.html_report import json_safe


def centred_orthonormal(n: int, k: int, rng) -> np.ndarray:
    """n x k matrix with orthonormal columns, each summing to 0 (so any U S V^T is centred)."""
    a = rng.standard_normal((n, k))
    a -= a.mean(0)
    return np.linalg.qr(a)[0]


def matrix_with_singular_values(n, d, s, rng) -> np.ndarray:
    """A centred n x d matrix whose non-zero singular values are exactly s."""
    u = centred_orthonormal(n, len(s), rng)
    v = np.linalg.qr(rng.standard_normal((d, len(s))))[0]
    return (u * np.asarray(s)) @ v.T


# --- spectrum -------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_torch", [False, True])
def test_spectrum_matches_numpy_covariance(as_torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 12)) @ rng.standard_normal((12, 12)) + 3.0  # correlated, off-centre
    expected = np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True))[::-1]
    got = spectrum(torch.from_numpy(x) if as_torch else x)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert np.all(np.diff(got) <= 0), "eigenvalues must be in descending order"


def test_spectrum_normalized_uses_unit_rows():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 8)) * np.arange(1, 9)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = np.linalg.eigvalsh(np.cov(unit, rowvar=False, bias=True))[::-1]
    np.testing.assert_allclose(spectrum(x, normalize=True), expected, rtol=1e-10, atol=1e-14)


def test_chunked_spectrum_equals_one_block():
    x = torch.randn(1001, 16, dtype=torch.float32)
    np.testing.assert_allclose(spectrum(x, chunk_rows=37), spectrum(x, chunk_rows=10**6), rtol=1e-10)
    np.testing.assert_allclose(
        spectrum(x, normalize=True, chunk_rows=37), spectrum(x, normalize=True, chunk_rows=10**6), rtol=1e-10
    )


def test_rank_deficient_features_show_collapsed_dimensions():
    rng = np.random.default_rng(2)
    rank, dim = 5, 24
    x = (rng.standard_normal((2000, rank)) @ rng.standard_normal((rank, dim))).astype(np.float32)
    eigs = spectrum(torch.from_numpy(x))
    assert collapsed_dimensions(eigs) == dim - rank
    assert collapsed_dimensions(spectrum(x, normalize=True)) == dim - rank
    # full-rank data with a wide but finite spread has none
    assert collapsed_dimensions(spectrum(rng.standard_normal((2000, dim)) * np.linspace(0.1, 1, dim))) == 0


def test_collapsed_dimensions_threshold_is_relative():
    eigs = np.array([1.0, 1e-3, 2e-5, 5e-6, 0.0, -1e-18])
    assert collapsed_dimensions(eigs) == 3  # below 1e-5 x 1.0
    assert collapsed_dimensions(eigs, rel_threshold=1e-2) == 5
    assert collapsed_dimensions(eigs * 100) == 3


# --- effective rank, RankMe, alpha-ReQ ---------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 7])
def test_effective_rank_of_k_equal_singular_values_is_k(k):
    x = matrix_with_singular_values(50, 10, [2.5] * k, np.random.default_rng(k))
    assert effective_rank(x) == pytest.approx(k, rel=1e-9)
    assert effective_rank(x, center=False) == pytest.approx(k, rel=1e-9)


def test_effective_rank_matches_roy_vetterli_on_centred_svd():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((80, 6)) * np.array([5, 3, 2, 1, 0.5, 0.1]) + 1.0
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = s / s.sum()
    assert effective_rank(x) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)


@pytest.mark.parametrize("shape", [(200, 16), (10, 32)])  # N > d and N < d (min(N, d) singular values)
def test_rankme_as_in_garrido_et_al(shape):
    rng = np.random.default_rng(4)
    z = rng.standard_normal(shape) * np.geomspace(1, 1e-3, shape[1])
    s = np.linalg.svd(z, compute_uv=False)  # uncentred embedding matrix, min(N, d) values
    p = s / np.abs(s).sum() + 1e-7
    assert rankme(z) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert rankme(matrix_with_singular_values(60, 20, [1.0] * 4, rng)) == pytest.approx(4, rel=1e-4)


def test_alpha_req_recovers_power_law_exponent():
    lam = np.arange(1, 201) ** -1.7
    fit = power_law_exponent(lam)
    assert fit["alpha"] == pytest.approx(1.7, rel=1e-9)
    assert fit["fit_ranks"] == [6, 100]
    # features whose covariance is exactly diag(lam): Q sqrt(N lam) with Q orthonormal, centred
    n = 400
    x = centred_orthonormal(n, 200, np.random.default_rng(5)) * np.sqrt(n * lam)
    assert alpha_req(x) == pytest.approx(1.7, rel=1e-6)


def test_alpha_req_fit_range_skips_collapsed_tail():
    lam = np.concatenate([np.arange(1, 41) ** -1.0, np.full(60, 1e-12)])  # 60 collapsed dims
    fit = power_law_exponent(lam)
    assert fit["fit_ranks"] == [6, 40]
    assert fit["alpha"] == pytest.approx(1.0, rel=1e-9)


# --- min-max ratio, alignment, uniformity -------------------------------------------------------------


def test_min_max_ratio_on_hand_made_points():
    # 1-D points 0, 1, 3: queries give (3-1)/1, (2-1)/1, (3-2)/2 -> mean 7/6
    assert min_max_ratio(np.array([[0.0], [1.0], [3.0]])) == pytest.approx(7 / 6)
    # unit square corners: nearest 1, farthest sqrt(2) for every corner
    square = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)
    assert min_max_ratio(square) == pytest.approx(math.sqrt(2) - 1)
    # normalised: (2,0), (0,3), (-1,0) -> (1,0), (0,1), (-1,0): ratios sqrt2-1, 0, sqrt2-1
    pts = np.array([[2.0, 0], [0, 3.0], [-1.0, 0]])
    assert min_max_ratio(pts, normalize=True) == pytest.approx(2 * (math.sqrt(2) - 1) / 3)
    assert math.isinf(min_max_ratio(np.array([[0.0], [0.0], [1.0]])))  # a duplicate: min distance 0


def test_min_max_ratio_blocks_and_query_subsample_match_direct():
    x = torch.randn(300, 5, dtype=torch.float64)
    d = torch.cdist(x, x).numpy()
    np.fill_diagonal(d, np.nan)
    per_query = (np.nanmax(d, 1) - np.nanmin(d, 1)) / np.nanmin(d, 1)
    assert min_max_ratio(x) == pytest.approx(per_query.mean(), rel=1e-9)
    assert min_max_ratio(x, block_elements=700) == pytest.approx(per_query.mean(), rel=1e-9)  # 2 rows a block
    picked = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:50].sort().values.numpy()
    assert min_max_ratio(x, max_queries=50, block_elements=900) == pytest.approx(per_query[picked].mean(), rel=1e-9)


def test_alignment_and_uniformity_match_wang_isola():
    x, y = torch.randn(120, 7, dtype=torch.float64), torch.randn(120, 7, dtype=torch.float64)
    xn, yn = x / x.norm(dim=1, keepdim=True), y / y.norm(dim=1, keepdim=True)
    assert alignment(x, y) == pytest.approx((xn - yn).norm(dim=1).pow(2).mean().item(), rel=1e-12)
    reference = torch.pdist(xn, p=2).pow(2).mul(-2).exp().mean().log().item()  # their reference code
    assert uniformity(x) == pytest.approx(reference, rel=1e-10)
    assert uniformity(x, block_elements=500) == pytest.approx(reference, rel=1e-10)
    assert alignment(x, 3 * x) == pytest.approx(0.0, abs=1e-12)  # same directions
    assert uniformity(torch.ones(10, 3)) == pytest.approx(0.0, abs=1e-12)  # all on one point


# --- class centres (Huang et al. 2023) -----------------------------------------------------------------------


def test_class_centre_metrics_hand_derived():
    x = np.array([[1.0, 0], [0, 2.0], [-3.0, 0]])  # normalised: (1,0), (0,1) | (-1,0)
    y = np.array([0, 0, 1])
    # mu_0 = (0.5, 0.5), mu_1 = (-1, 0): divergence mu_0.mu_1 = -0.5; min ||mu||^2 = 0.5
    assert centre_divergence(x, y) == pytest.approx(-0.5)
    assert delta_mu(x, y) == pytest.approx(0.5)
    assert nearest_centre_accuracy(x, y) == pytest.approx(1.0)


def test_nearest_centre_accuracy_matches_sklearn():
    from sklearn.neighbors import NearestCentroid

    rng = np.random.default_rng(6)
    y = rng.integers(0, 4, 400)
    x = rng.standard_normal((400, 6)) + np.eye(4, 6)[y] * 1.5
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    train, test = slice(0, 300), slice(300, None)
    clf = NearestCentroid().fit(xn[train], y[train])
    assert nearest_centre_accuracy(x[test], y[test], x[train], y[train]) == pytest.approx(
        (clf.predict(xn[test]) == y[test]).mean()
    )
    assert nearest_centre_accuracy(x, y) == pytest.approx((NearestCentroid().fit(xn, y).predict(xn) == y).mean())


# --- head and the bundle ----------------------------------------------------------------------------


def test_head_sparsity_reports_zeroed_columns():
    head = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    with torch.no_grad():
        head[2].weight[:, [1, 3]] = 0.0
    (info,) = head_sparsity(head, "last", threshold=1e-3)
    norms = head[2].weight.detach().norm(dim=0)
    assert info["support"] == 3 and info["shape"] == [4, 5]
    assert info["column_norms"] == pytest.approx(sorted(norms.tolist(), reverse=True))
    assert info["l21"] == pytest.approx(norms.sum().item())
    assert len(head_sparsity(head, "all")) == 2 and head_sparsity(nn.Identity()) == []


def test_diagnostics_bundle_is_json_safe_and_subsamples():
    x = torch.randn(300, 10) * torch.linspace(0.1, 2, 10) + 5.0  # off-centre: RankMe's shortcut matters
    summary = spectral_summary(x)
    assert summary["rankme"] == pytest.approx(rankme(x), rel=1e-9)
    assert summary["effective_rank"] == pytest.approx(effective_rank(x), rel=1e-12)
    assert summary["alpha_req"] == pytest.approx(alpha_req(x), rel=1e-12)
    out = diagnostics(
        x, labels=np.arange(300) % 3, view_pair=(x, x + 1e-3 * torch.randn(300, 10)), pairwise_samples=100
    )
    assert out["pairwise_samples"] == 100 and out["samples"] == 300
    assert len(out["spectra"]["raw"]) == 10 and out["alignment"] < 0.01
    json.dumps(json_safe(out), allow_nan=False)
    assert json_safe({"a": [float("inf"), 1.0]}) == {"a": [None, 1.0]}


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((1, 4)), np.array([[1.0, np.nan], [0.0, 1.0]])])
def test_bad_feature_matrices_are_rejected(bad):
    with pytest.raises(ValueError):
        spectrum(bad)
