"""Distance-based and class-based diagnostics of a feature matrix, and all diagnostics at once.

Pairwise quantities (min-max ratio, uniformity) are computed over blocks of query rows against
all N rows, in float64, so memory stays at about PAIR_BLOCK_ELEMENTS numbers whatever N is.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from sparsehead.evaluate.ncc import ncc_classify
from sparsehead.maths.centres import class_centres
from sparsehead.maths.spectrum import (
    COLLAPSE_THRESHOLD,
    Features,
    as_features,
    collapsed_dimensions,
    l2_normalize,
    power_law_exponent,
    rank_measures,
    spectrum,
)

PAIR_BLOCK_ELEMENTS = 8_000_000  # float64 query-by-point distances held at once (64 MiB)


def _query_blocks(n: int, block_elements: int):
    rows = max(1, block_elements // n)
    for start in range(0, n, rows):
        yield start, min(start + rows, n)


def _squared_distances(q: torch.Tensor, x: torch.Tensor, x_sq: torch.Tensor) -> torch.Tensor:
    """||q_i - x_j||^2 for a block of queries against all points (float64, clamped at 0)."""
    return (q.pow(2).sum(1, keepdim=True) + x_sq[None, :] - 2.0 * q @ x.T).clamp_min_(0.0)


def min_max_ratio(
    x: Features,
    normalize: bool = False,
    max_queries: Optional[int] = None,
    seed: int = 0,
    block_elements: int = PAIR_BLOCK_ELEMENTS,
) -> float:
    """Song et al. 2023 Eq. 9 averaged over queries: for each query z, (max_i ||z - z_i|| - min_i ||z - z_i||)
    / min_i ||z - z_i|| over all OTHER samples z_i.

    normalize=True L2-normalises the rows first. max_queries draws that many queries at random
    (seeded), each still compared with all N samples. A query with an exact duplicate has
    min = 0 and an infinite ratio, and so has the mean.
    """
    x = as_features(x).to(torch.float64)
    if normalize:
        x = l2_normalize(x)
    n = x.shape[0]
    queries = torch.arange(n, device=x.device)
    if max_queries is not None and max_queries < n:
        g = torch.Generator().manual_seed(seed)
        queries = torch.randperm(n, generator=g)[:max_queries].sort().values.to(x.device)
    x_sq = x.pow(2).sum(1)
    total = 0.0
    for start, stop in _query_blocks(n, block_elements):
        idx = queries[(queries >= start) & (queries < stop)]
        if idx.numel() == 0:
            continue
        sq = _squared_distances(x[idx], x, x_sq)
        dmax = sq.max(1).values.sqrt()  # the query's own 0 never wins (unless all points coincide)
        sq[torch.arange(len(idx), device=sq.device), idx] = math.inf  # leave the query itself out
        dmin = sq.min(1).values.sqrt()  # sqrt after the reduction: one pass fewer over the block
        total += ((dmax - dmin) / dmin).sum().item()
    return total / queries.numel()


def alignment(x: Features, y: Features, alpha: float = 2.0) -> float:
    """Wang & Isola (2020) alignment: mean ||x_i - y_i||^alpha over positive pairs (x_i, y_i) of
    L2-normalised features (alpha = 2: the mean squared distance). Lower is better aligned."""
    x, y = as_features(x).to(torch.float64), as_features(y).to(torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"alignment needs paired features of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    return (l2_normalize(x) - l2_normalize(y)).norm(dim=1).pow(alpha).mean().item()


def uniformity(x: Features, t: float = 2.0, block_elements: int = PAIR_BLOCK_ELEMENTS) -> float:
    """Wang & Isola (2020) uniformity: log mean_{i != j} exp(-t ||x_i - x_j||^2) on L2-normalised
    features (from -4t, the most uniform, to 0, everything on one point)."""
    x = l2_normalize(as_features(x).to(torch.float64))
    n = x.shape[0]
    x_sq = x.pow(2).sum(1)
    total = 0.0
    for start, stop in _query_blocks(n, block_elements):
        kernel = _squared_distances(x[start:stop], x, x_sq).mul_(-t).exp_()
        total += kernel.sum().item() - kernel.diagonal(offset=start).sum().item()  # drop i == j
    return math.log(total / (n * (n - 1)))


# --- class centres (Huang et al. 2023, Huang et al.) -----------------------------------------------------


def normalized_centres(x: Features, labels) -> tuple[np.ndarray, torch.Tensor]:
    """(class ids, mu) with mu_k the mean of the L2-normalised features of class k (norm r = 1),
    by maths.centres.class_centres; samples labelled -1 (unlabelled) are left out."""
    x = l2_normalize(as_features(x).to(torch.float64))
    labels = torch.as_tensor(np.asarray(labels), device=x.device).long()
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must be one per sample ({x.shape[0]}), got shape {tuple(labels.shape)}")
    classes, mu = class_centres(x, labels)
    return classes.cpu().numpy(), mu


def centre_divergence(x: Features, labels) -> float:
    """max_{k != l} mu_k^T mu_l over class centres of normalised features (smaller: classes further
    apart; Huang et al. 2023's divergence condition)."""
    _, mu = normalized_centres(x, labels)
    if len(mu) < 2:
        return float("nan")
    gram = mu @ mu.T
    return gram.masked_fill(torch.eye(len(mu), dtype=torch.bool, device=gram.device), -math.inf).max().item()


def delta_mu(x: Features, labels) -> float:
    """Delta_mu = 1 - min_k ||mu_k||^2 / r^2 with r = 1 (normalised features): 0 when every class
    sits on one point, towards 1 when some class is spread over the sphere."""
    _, mu = normalized_centres(x, labels)
    if len(mu) == 0:
        return float("nan")
    return 1.0 - mu.pow(2).sum(1).min().item()


def nearest_centre_accuracy(x: Features, labels, train_x: Optional[Features] = None, train_labels=None) -> float:
    """Accuracy of argmin_k ||f(x) - mu_k|| on normalised features (evaluate.ncc.ncc_classify). The
    centres come from (train_x, train_labels) when given, else from (x, labels) themselves (an
    in-sample measure). Samples labelled -1 are left out."""
    if (train_x is None) != (train_labels is None):
        raise ValueError("give both train_x and train_labels, or neither")
    if train_x is None:
        train_x, train_labels = x, labels
    feats = as_features(x).to(torch.float64)
    labels = torch.as_tensor(np.asarray(labels)).long()
    train = as_features(train_x).to(torch.float64)
    train_y = torch.as_tensor(np.asarray(train_labels)).long()
    if not (train_y >= 0).any():
        return float("nan")
    keep = labels >= 0
    pred = ncc_classify(train, train_y, feats, normalize=True).cpu()
    return (pred[keep] == labels[keep]).double().mean().item()


# --- everything at once -----------------------------------------------------------------------------

PAIRWISE_SAMPLES = 10_000  # rows used by the O(N^2) metrics: the whole CIFAR-10 test set, a seeded
# random subset of larger sets


def spectral_summary(x: Features) -> dict:
    """The spectrum-based diagnostics (cheap: one d x d matrix each) and the spectra themselves."""
    x = as_features(x)
    n, d = x.shape
    ranks = rank_measures(x)
    eigs = ranks["eigenvalues"]
    eigs_norm = spectrum(x, normalize=True)
    fit = power_law_exponent(eigs)
    return {
        "samples": n,
        "dim": d,
        "collapse_threshold": COLLAPSE_THRESHOLD,
        "collapsed_dims": collapsed_dimensions(eigs),
        "collapsed_dims_normalized": collapsed_dimensions(eigs_norm),
        "effective_rank": ranks["effective_rank"],
        "rankme": ranks["rankme"],
        "top_eig_share": ranks["top_eig_share"],
        "alpha_req": fit["alpha"],
        "alpha_req_fit_ranks": fit["fit_ranks"],
        "spectra": {"raw": eigs.tolist(), "normalized": eigs_norm.tolist()},
    }


def random_rows(x: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """`count` rows of x drawn without replacement (seeded), or x itself when it has no more."""
    if x.shape[0] <= count:
        return x
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:count]
    return x[idx.sort().values.to(x.device)]


def diagnostics(
    x: Features,
    labels=None,
    view_pair: Optional[tuple[Features, Features]] = None,
    pairwise_samples: int = PAIRWISE_SAMPLES,
    seed: int = 0,
) -> dict:
    """All diagnostics of one feature matrix: the spectral summary, the min-max ratio and
    uniformity (on at most `pairwise_samples` rows, drawn at random with `seed` when there are
    more), alignment of `view_pair` (features of two augmented views of the same images) and,
    with `labels`, the class-centre metrics."""
    x = as_features(x)
    out = spectral_summary(x)
    sub = random_rows(x, pairwise_samples, seed)
    out["pairwise_samples"] = sub.shape[0]
    out["min_max_ratio"] = min_max_ratio(sub)
    out["min_max_ratio_normalized"] = min_max_ratio(sub, normalize=True)
    out["uniformity"] = uniformity(sub)
    if view_pair is not None:
        out["alignment"] = alignment(*view_pair)
    if labels is not None:
        out["centre_divergence"] = centre_divergence(x, labels)
        out["delta_mu"] = delta_mu(x, labels)
        out["nearest_centre_accuracy"] = nearest_centre_accuracy(x, labels)
    return out
