"""Self-supervised losses as plain functions (SPEC section 2), each a mean over the batch.

Under DDP they gather across processes themselves, with gradients, so the same call gives the
single-process loss on the concatenated batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import (all_reduce_sum_no_grad, all_reduce_sum_with_grad, gather_with_grad, rank,
                          world_size)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent: each of the 2N views against the 2N - 1 others, CE to its positive."""
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
    logits = logits.masked_fill(
        F.one_hot(self_index, 2 * total).bool(), float("-inf"))
    return F.cross_entropy(logits, positive)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's 2 - 2 cos(p, sg(z)), averaged over the batch (one direction; symmetrise by adding)."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


def _standardize_global(z: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, int]:
    """BatchNorm without affine over the batch of all processes (biased variance, as BN)."""
    n_global = z.shape[0] * world_size()
    mean = all_reduce_sum_with_grad(z.sum(dim=0)) / n_global
    var = all_reduce_sum_with_grad(((z - mean) ** 2).sum(dim=0)) / n_global
    return (z - mean) / torch.sqrt(var + eps), n_global


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float = 0.0051) -> torch.Tensor:
    """sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2, c the cross-correlation of the
    batch-standardised embeddings over the global batch."""
    a, n_global = _standardize_global(z1)
    b, _ = _standardize_global(z2)
    c = all_reduce_sum_with_grad(a.T @ b) / n_global
    diag = torch.diagonal(c)
    off = c.pow(2).sum() - diag.pow(2).sum()
    return (1 - diag).pow(2).sum() + lambda_offdiag * off


def _cross_view_nce(anchors: torch.Tensor, others: torch.Tensor, temperature: float) -> torch.Tensor:
    """CE of each anchor's logits against every `others` vector of the global batch (no same-view
    negatives), the positive being its own pair."""
    candidates = gather_with_grad(others)
    own = torch.arange(anchors.shape[0], device=anchors.device) + rank() * anchors.shape[0]
    return F.cross_entropy(anchors @ candidates.T / temperature, own)


def directclr_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """DirectCLR's InfoNCE (papers/003, official code): (nce(z1, z2) + nce(z2, z1)) / 2 on the
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


def wmse_loss(z1: torch.Tensor, z2: torch.Tensor, w_size: int, w_iter: int = 1, eps: float = 0.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
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


def swav_loss(scores1: torch.Tensor, scores2: torch.Tensor, temperature: float = 0.1,
              epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's swapped prediction for two crops: each view's codes (no gradient) are the targets of
    the other view's softmax(scores / temperature); cross-entropies averaged over the batch and the
    two directions."""
    q1 = sinkhorn_knopp(scores1.detach(), epsilon, iterations)
    q2 = sinkhorn_knopp(scores2.detach(), epsilon, iterations)

    def swapped(codes, scores):
        return -(codes * F.log_softmax(scores / temperature, dim=1)).sum(dim=1).mean()
    return (swapped(q1, scores2) + swapped(q2, scores1)) / 2
