"""Eigenvalue spectra of feature covariances and the rank measures derived from them
(formulas: docs/references.md, diagnostics): the one home of these formulas, used by the analysis
of a trained run and by the training loop's collapse monitor alike.

Everything here works on the d x d second-moment matrix, accumulated over row chunks in float64,
so a 50,000 x 2,048 feature matrix never becomes an N x N matrix and the small eigenvalues that
reveal collapse are not lost to float32 rounding.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

Features = Union[torch.Tensor, np.ndarray]

CHUNK_ROWS = 8192  # rows per float64 block: 8192 x 2048 x 8 bytes = 128 MiB at most
COLLAPSE_THRESHOLD = 1e-5  # an eigenvalue below this fraction of the largest counts as collapsed
ALPHA_FIT_RANKS = (6, 100)  # alpha-ReQ fit range, 1-based ranks inclusive (as the reptrix reference)
RANKME_EPS = 1e-7  # Garrido et al. 2023's epsilon in p_k = s_k / ||s||_1 + eps
LIDAR_DELTA, LIDAR_EPS = 1e-4, 1e-8  # Thilak et al. 2023's regulariser of Sigma_w and entropy epsilon


def as_features(x: Features) -> torch.Tensor:
    """A 2-D (N, d) tensor view of `x` (numpy or torch, any float dtype), kept on its device."""
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"features must be a 2-D (samples, dims) matrix, got shape {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ValueError(f"features need at least 2 samples, got {t.shape[0]}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"features must be numbers, got dtype {t.dtype}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(
            "features contain NaN or infinite values (a diverged model?); diagnostics need finite features"
        )
    return t


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def _row_blocks(x: torch.Tensor, normalize: bool, chunk_rows: int):
    for start in range(0, x.shape[0], chunk_rows):
        block = x[start : start + chunk_rows].to(torch.float64)
        yield l2_normalize(block) if normalize else block


def column_mean(x: Features, normalize: bool = False, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Mean row (float64), accumulated over row chunks; normalize=True: of the L2-normalised rows."""
    x = as_features(x)
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for block in _row_blocks(x, normalize, chunk_rows):
        total += block.sum(dim=0)
    return total / x.shape[0]


def second_moment(
    x: Features, center: bool = True, normalize: bool = False, chunk_rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """(X - mean)^T (X - mean) / N (or X^T X / N with center=False) as a float64 d x d matrix.

    normalize=True L2-normalises every row first (as DirectCLR's spectrum code does). Two passes
    over row chunks (the mean, then the centred products): centring before multiplying keeps the
    small eigenvalues exact even when the mean is large.
    """
    x = as_features(x)
    mean = column_mean(x, normalize, chunk_rows) if center else 0.0
    moment = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for block in _row_blocks(x, normalize, chunk_rows):
        block = block - mean
        moment.addmm_(block.T, block)
    return moment / x.shape[0]


def eigenvalues(matrix: torch.Tensor) -> np.ndarray:
    """Eigenvalues of a symmetric matrix, descending, as float64 numpy."""
    return torch.linalg.eigvalsh(matrix).flip(0).cpu().numpy()


def spectrum(x: Features, normalize: bool = False, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Eigenvalues (descending) of the covariance C = (X - mean)^T (X - mean) / N of the rows of x.

    normalize=True L2-normalises each row first. Tiny negative values are float round-off of zero
    eigenvalues and are kept as they are (plots clip them).
    """
    return eigenvalues(second_moment(x, center=True, normalize=normalize, chunk_rows=chunk_rows))


def collapsed_dimensions(eigs: np.ndarray, rel_threshold: float = COLLAPSE_THRESHOLD) -> int:
    """How many eigenvalues lie below rel_threshold x the largest one (default 1e-5).

    1e-5 of the largest eigenvalue is a variance ratio of 1e-5 (a standard-deviation ratio of
    ~3e-3): far above float32 round-off (~1e-7 relative in each feature, ~1e-14 in variance)
    and far below any direction a linear probe could use.
    """
    eigs = np.asarray(eigs, dtype=np.float64)
    top = eigs.max(initial=0.0)
    if top <= 0:
        return int(eigs.size)  # a constant feature matrix: every dimension collapsed
    return int((eigs < rel_threshold * top).sum())


def entropy_rank(values: np.ndarray, eps: float = 0.0) -> float:
    """exp(-sum p log p) with p = values / sum(values) + eps (0 log 0 = 0)."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    total = values.sum()
    if total <= 0:
        return 0.0
    p = values / total + eps
    return float(math.exp(-np.sum(p * np.log(np.where(p > 0, p, 1.0)))))


def singular_values(eigs: np.ndarray, n: int) -> np.ndarray:
    """Singular values of the N x d matrix whose X^T X / N has eigenvalues `eigs` (descending; the
    top min(N, d) of them). Eigenvalues within float64 round-off of zero (below d x eps x the largest,
    the usual numerical rank tolerance) are exact zeros: their square roots (~1e-8 relative) would
    blur the entropy."""
    eigs = np.array(eigs, dtype=np.float64)
    eigs[eigs < eigs.size * np.finfo(np.float64).eps * eigs.max(initial=0.0)] = 0.0
    return np.sqrt(eigs[: min(n, eigs.size)] * n)


def small_side_eigenvalues(rows: torch.Tensor, d: int) -> np.ndarray:
    """The d eigenvalues (descending) of rows^T rows (rows: m x d, float64), from the m x m Gram
    matrix rows rows^T when m < d: it has the same non-zero eigenvalues (the other d - m are zeros)
    at m^3 cost instead of d^3."""
    if rows.shape[0] >= d:
        return eigenvalues(rows.T @ rows)
    return padded_eigenvalues(rows @ rows.T, d)


def padded_eigenvalues(gram: torch.Tensor, d: int) -> np.ndarray:
    """The eigenvalues of an m x m Gram matrix (descending) and d - m zeros after them."""
    eigs = eigenvalues(gram)
    return np.concatenate([eigs, np.zeros(d - eigs.size)])


def centred_and_uncentred_eigenvalues(x: torch.Tensor, chunk_rows: int = CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) of the covariance C = (X - mean)^T (X - mean) / N and of X^T X / N.

    With N >= d, from the d x d moments accumulated over row chunks, X^T X / N = C + mean mean^T
    (no third pass over X); with fewer rows than dimensions (the training monitor's window), from
    the N x N Gram matrices (small_side_eigenvalues)."""
    n, d = x.shape
    if n >= d:
        centred = second_moment(x, center=True, chunk_rows=chunk_rows)
        mean = column_mean(x, chunk_rows=chunk_rows)
        return eigenvalues(centred), eigenvalues(centred + torch.outer(mean, mean))
    rows = x.to(torch.float64) / math.sqrt(n)
    mean = rows.mean(dim=0)
    centred = rows - mean
    gram = centred @ centred.T
    # X X^T = Xc Xc^T + c 1^T + 1 c^T + |mean|^2 with c = Xc mean: no second N x N x d product
    across = centred @ mean
    return padded_eigenvalues(gram, d), padded_eigenvalues(gram + across[:, None] + across[None, :] + mean @ mean, d)


def top_eigenvalue_share(eigs: np.ndarray) -> float:
    """The largest eigenvalue over their sum (1: everything in one direction; 1/d: isotropic)."""
    eigs = np.clip(np.asarray(eigs, dtype=np.float64), 0.0, None)
    return float(eigs.max(initial=0.0) / eigs.sum()) if eigs.sum() > 0 else 1.0


def rank_measures(x: Features, chunk_rows: int = CHUNK_ROWS) -> dict:
    """The covariance eigenvalues of x (descending) and the measures the analysis and the training
    monitor report from them: effective_rank (Roy & Vetterli 2007, centred), rankme (Garrido et al.
    2023, uncentred) and top_eig_share (the largest covariance eigenvalue's share of the trace)."""
    x = as_features(x)
    centred, uncentred = centred_and_uncentred_eigenvalues(x, chunk_rows)
    return {
        "eigenvalues": centred,
        "effective_rank": entropy_rank(singular_values(centred, len(x))),
        "rankme": entropy_rank(singular_values(uncentred, len(x)), RANKME_EPS),
        "top_eig_share": top_eigenvalue_share(centred),
    }


def effective_rank(x: Features, center: bool = True, chunk_rows: int = CHUNK_ROWS) -> float:
    """Roy & Vetterli (2007) effective rank: exp(entropy of s / sum(s)), s = singular values of X.

    center=True (default) uses the centred matrix, whose singular values are sqrt(N x the
    covariance eigenvalues) of `spectrum`: the erank then summarises the plotted spectrum.
    A matrix with k equal non-zero singular values has effective rank exactly k.
    """
    x = as_features(x)
    centred, uncentred = centred_and_uncentred_eigenvalues(x, chunk_rows)
    return entropy_rank(singular_values(centred if center else uncentred, len(x)))


def rankme(x: Features, eps: float = RANKME_EPS, chunk_rows: int = CHUNK_ROWS) -> float:
    """RankMe (Garrido et al. 2023): exp(-sum p_k log p_k), p_k = s_k / ||s||_1 + eps, with s the
    singular values of the (uncentred) embedding matrix, k = 1..min(N, d)."""
    x = as_features(x)
    return entropy_rank(singular_values(centred_and_uncentred_eigenvalues(x, chunk_rows)[1], len(x)), eps)


def lidar(views: Features, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS) -> float:
    """LiDAR (Thilak et al. 2023) of `views`, an (n, q, d) array of q >= 2 embeddings of each of n
    images (each image a surrogate class): the entropy rank, p_k = lambda_k / ||lambda||_1 + eps over
    all d eigenvalues lambda of Sigma_w^-1/2 Sigma_b Sigma_w^-1/2, where
    Sigma_b = sum_i (mu_i - mu)(mu_i - mu)^T / (n - 1) is the scatter of the images' mean embeddings
    mu_i and Sigma_w = sum_ij (e_ij - mu_i)(e_ij - mu_i)^T / (n (q - 1)) + delta I that of the views
    about their image's mean. Those eigenvalues are the ones of B Sigma_w^-1 B^T (B: the rows of
    Sigma_b = B^T B), computed on the smaller side: through a Cholesky factor of Sigma_w when
    d <= n q, else through the Woodbury identity on the n q within-image rows. NaN where Sigma_w is
    singular in float64."""
    e = torch.as_tensor(views).to(torch.float64)
    if e.ndim != 3 or e.shape[0] < 2 or e.shape[1] < 2:
        raise ValueError(f"LiDAR needs (images >= 2, views >= 2, dims) embeddings, got shape {tuple(e.shape)}")
    n, q, d = e.shape
    means = e.mean(dim=1)
    between = (means - means.mean(dim=0)) / math.sqrt(n - 1)  # n x d
    within = (e - means[:, None]).reshape(n * q, d) / math.sqrt(n * (q - 1))
    if d <= n * q:
        factor, info = torch.linalg.cholesky_ex(
            within.T @ within + delta * torch.eye(d, dtype=e.dtype, device=e.device)
        )
        if info:  # Sigma_w singular in float64 (delta negligible against embeddings of huge scale)
            return float("nan")
        eigs = small_side_eigenvalues(torch.linalg.solve_triangular(factor, between.T, upper=False).T, d)
    else:  # Sigma_w^-1 = (I - W^T (delta I + W W^T)^-1 W) / delta, W = within
        inner = delta * torch.eye(n * q, dtype=e.dtype, device=e.device) + within @ within.T
        cross = within @ between.T
        matrix = (between @ between.T - cross.T @ torch.linalg.solve(inner, cross)) / delta
        eigs = padded_eigenvalues((matrix + matrix.T) / 2, d)
    return entropy_rank(eigs, eps)


def power_law_exponent(
    eigs: np.ndarray, ranks: tuple[int, int] = ALPHA_FIT_RANKS, rel_threshold: float = COLLAPSE_THRESHOLD
) -> dict:
    """Least-squares slope of log(eigenvalue) against log(rank) over the given 1-based ranks
    (inclusive), leaving out collapsed eigenvalues (below rel_threshold x the largest); the
    exponent alpha is minus the slope (lambda_i ~ i^-alpha). Returns alpha and the ranks used."""
    eigs = np.asarray(eigs, dtype=np.float64)
    first, last = ranks
    usable = int((eigs >= rel_threshold * eigs.max(initial=0.0)).sum()) if eigs.size and eigs.max() > 0 else 0
    last = min(last, usable)
    if last - first + 1 < 3:  # too few eigenvalues in the range: fit all usable ones from rank 1
        first = 1
    if last - first + 1 < 3:
        return {"alpha": float("nan"), "fit_ranks": [first, last]}
    rank = np.arange(first, last + 1)
    slope, _ = np.polyfit(np.log(rank), np.log(eigs[first - 1 : last]), 1)
    return {"alpha": float(-slope), "fit_ranks": [int(first), int(last)]}


def alpha_req(x: Features, ranks: tuple[int, int] = ALPHA_FIT_RANKS, normalize: bool = False) -> float:
    """alpha-ReQ (Agrawal et al. 2022): the power-law decay exponent of the covariance spectrum,
    fitted on log-log over ranks 6..100 (the reptrix reference's default range), clipped to the
    non-collapsed eigenvalues; with fewer than 3 eigenvalues there, over all of them."""
    return power_law_exponent(spectrum(x, normalize=normalize), ranks)["alpha"]
