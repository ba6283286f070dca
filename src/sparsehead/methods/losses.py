"""Self-supervised losses as plain functions (formulas: docs/references.md, losses), each a mean over the batch.

Under DDP they gather across processes themselves, with gradients, so the same call gives the
single-process loss on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsehead.core.distributed import (
    all_reduce_sum_no_grad,
    all_reduce_sum_with_grad,
    gather_no_grad,
    gather_with_grad,
    global_moments,
    rank,
    world_size,
)
from sparsehead.core.precision import float32_loss


def _two_view_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float):
    """Cosine logits of this process's 2n views against all 2N gathered views (with gradient).

    Returns the logits (2n, 2N) and, per anchor, the column of itself and of its positive."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    all1, all2 = gather_with_grad(z1), gather_with_grad(z2)
    total = all1.shape[0]
    candidates = torch.cat([all1, all2])  # (2 * total, d)
    anchors = torch.cat([z1, z2])  # (2n, d): this process's views
    logits = anchors @ candidates.T / temperature
    own = torch.arange(n, device=z1.device) + rank() * n  # this process's rows in the gathered batch
    self_index = torch.cat([own, own + total])
    positive = torch.cat([own + total, own])
    return logits, self_index, positive


@float32_loss
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent: each of the 2N views against the 2N - 1 others, CE to its positive."""
    logits, self_index, positive = _two_view_logits(z1, z2, temperature)
    logits = logits.masked_fill(F.one_hot(self_index, logits.shape[1]).bool(), float("-inf"))
    return F.cross_entropy(logits, positive)


@float32_loss
def huang_infonce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, lam: float = 1.0) -> torch.Tensor:
    """Huang et al.'s revised InfoNCE (Huang et al. 2023): ||f(x1) - f(x2)||^2 + lambda * log sum_i
    exp(f(x1)^T f(x_i^-) / tau), f L2-normalised as in the paper's analysis (||f|| = 1).

    The negatives x_i^- are augmented views of OTHER images (x' != x): for each anchor, both views
    of every other image in the (gathered) batch; its own positive is not among them. Both views
    take the anchor role in turn, as in NT-Xent; both terms are means over the batch."""
    alignment = (F.normalize(z1, dim=1) - F.normalize(z2, dim=1)).pow(2).sum(dim=1).mean()
    logits, self_index, positive = _two_view_logits(z1, z2, temperature)
    not_negative = F.one_hot(self_index, logits.shape[1]) + F.one_hot(positive, logits.shape[1])
    spread = torch.logsumexp(logits.masked_fill(not_negative.bool(), float("-inf")), dim=1).mean()
    return alignment + lam * spread


@float32_loss
def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's 2 - 2 cos(p, sg(z)), averaged over the batch (one direction; symmetrise by adding)."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


def _standardize_global(z: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, int]:
    """BatchNorm without affine over the batch of all processes (biased variance, as BN)."""
    mean, var, n_global = global_moments(z, [0])
    return (z - mean) / torch.sqrt(var + eps), n_global


@float32_loss
def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float = 0.0051) -> torch.Tensor:
    """sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2, c the cross-correlation of the
    batch-standardised embeddings over the global batch."""
    a, n_global = _standardize_global(z1)
    b, _ = _standardize_global(z2)
    c = all_reduce_sum_with_grad(a.T @ b) / n_global
    diag = torch.diagonal(c)
    off = c.pow(2).sum() - diag.pow(2).sum()
    return (1 - diag).pow(2).sum() + lambda_offdiag * off


@float32_loss
def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam's -0.5 (cos(p1, sg z2) + cos(p2, sg z1)), averaged over the batch."""
    return -0.5 * (
        F.cosine_similarity(p1, z2.detach(), dim=1).mean() + F.cosine_similarity(p2, z1.detach(), dim=1).mean()
    )


def _variance_hinge(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """mean_j relu(1 - sqrt(var_j + eps)), unbiased variance over the batch (VICReg)."""
    return F.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean()


def _offdiag_covariance(z: torch.Tensor) -> torch.Tensor:
    """sum_{i != j} cov_ij^2 / D, cov over the centred batch divided by N - 1 (VICReg)."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


@float32_loss
def vicreg_loss(
    z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0
) -> torch.Tensor:
    """VICReg: sim * mse(z1, z2) + std * (hinge(z1) + hinge(z2)) / 2 + cov * (offdiag(z1) + offdiag(z2)).

    The invariance term is a per-sample mean (DDP averages it); variance and covariance are
    statistics of the global batch, gathered with gradient as the official code does."""
    invariance = F.mse_loss(z1, z2)
    a, b = gather_with_grad(z1), gather_with_grad(z2)
    variance = (_variance_hinge(a) + _variance_hinge(b)) / 2
    covariance = _offdiag_covariance(a) + _offdiag_covariance(b)
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


@float32_loss
def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo v2's InfoNCE: logits [q.k+, q.queue] / tau, cross-entropy to index 0.

    q, k are L2-normalised here; `queue` (K, d) holds normalised keys of earlier batches."""
    q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    logits = torch.cat([positive, q @ queue.detach().T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


@float32_loss
def moco_v3_loss(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo v3's ctr(q, k) = CE(q k_all^T / tau, own index) * 2 tau, keys of all processes
    gathered without gradient (the key branch is a momentum encoder)."""
    q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
    keys = gather_no_grad(k)
    labels = torch.arange(q.shape[0], device=q.device) + rank() * q.shape[0]
    return F.cross_entropy(q @ keys.T / temperature, labels) * 2 * temperature


def _cross_view_nce(anchors: torch.Tensor, others: torch.Tensor, temperature: float) -> torch.Tensor:
    """CE of each anchor's logits against every `others` vector of the global batch (no same-view
    negatives), the positive being its own pair."""
    candidates = gather_with_grad(others)
    own = torch.arange(anchors.shape[0], device=anchors.device) + rank() * anchors.shape[0]
    return F.cross_entropy(anchors @ candidates.T / temperature, own)


@float32_loss
def directclr_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """DirectCLR's InfoNCE (Jing et al. 2022, official code): (nce(z1, z2) + nce(z2, z1)) / 2 on the
    L2-normalised sub-vectors, with only cross-view logits."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    return (_cross_view_nce(z1, z2, temperature) + _cross_view_nce(z2, z1, temperature)) / 2


def whiten(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """W-MSE's Cholesky whitening of one sub-batch: (x - mean) L^{-T} with L L^T the unbiased
    covariance shrunk towards I by eps, so the output's unbiased covariance is I (when eps = 0)."""
    centred = x - x.mean(dim=0)
    cov = centred.T @ centred / (x.shape[0] - 1)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    chol = torch.linalg.cholesky((1 - eps) * cov + eps * eye)
    return torch.linalg.solve_triangular(chol, centred.T, upper=False).T


@float32_loss
def wmse_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    w_size: int,
    w_iter: int = 1,
    eps: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """W-MSE (Ermolov et al. 2021, official code): w_iter times, split the batch at random into
    sub-batches of w_size, whiten each view of each sub-batch, then 2 - 2 cos between the whitened
    positives, averaged over samples and iterations. Sub-batches stay within a process: under DDP
    each rank whitens its own, the same as one process whose random split respects the ranks."""
    n = z1.shape[0]
    if n % w_size:
        raise ValueError(f"W-MSE: the batch of {n} is not a multiple of the whitening size {w_size}")
    total = z1.new_zeros(())
    for _ in range(w_iter):
        for idx in torch.randperm(n, generator=generator).to(z1.device).view(-1, w_size):
            w1, w2 = whiten(z1[idx], eps), whiten(z2[idx], eps)
            total = total + (2 - 2 * F.cosine_similarity(w1, w2, dim=1)).mean()
    return total / (w_iter * (n // w_size))


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's equal-partition codes (Caron et al. 2020, Algorithm 1) of (B, K) prototype scores:
    Q = exp(scores / eps), alternately scaled so each prototype gets 1/K and each sample 1/B of the
    mass (sums over the global batch under DDP); returned with each sample's row summing to 1."""
    q = torch.exp(scores.double() / epsilon).T  # (K, B); exp(1/eps) stays finite in float64
    k, b_global = q.shape[0], q.shape[1] * world_size()
    q = q / all_reduce_sum_no_grad(q.sum())
    for _ in range(iterations):
        q = q / all_reduce_sum_no_grad(q.sum(dim=1, keepdim=True)) / k
        q = q / q.sum(dim=0, keepdim=True) / b_global
    return (q * b_global).T.to(scores.dtype)


@float32_loss
def swav_loss(
    scores1: torch.Tensor, scores2: torch.Tensor, temperature: float = 0.1, epsilon: float = 0.05, iterations: int = 3
) -> torch.Tensor:
    """SwAV's swapped prediction for two crops: each view's codes (no gradient) are the targets of
    the other view's softmax(scores / temperature); cross-entropies averaged over the batch and the
    two directions."""
    codes = [sinkhorn_knopp(s.detach(), epsilon, iterations) for s in (scores1, scores2)]
    return swapped_prediction(codes, [scores1, scores2], temperature)


@float32_loss
def swapped_prediction(codes: list[torch.Tensor], scores: list[torch.Tensor], temperature: float = 0.1) -> torch.Tensor:
    """SwAV's multi-crop loss (its official code): the codes of each global crop i (codes[i], no
    gradient) are predicted from every other crop v != i, CE(codes[i], softmax(scores[v] / tau))
    averaged over the batch and the V - 1 other crops, then over the global crops."""

    def swapped(q, s):
        return -(q * F.log_softmax(s / temperature, dim=1)).sum(dim=1).mean()

    total = 0
    for i, q in enumerate(codes):
        total = total + sum(swapped(q, s) for v, s in enumerate(scores) if v != i) / (len(scores) - 1)
    return total / len(codes)
