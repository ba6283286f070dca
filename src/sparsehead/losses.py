"""Self-supervised losses as plain functions (SPEC section 2), each a mean over the batch.

Under DDP they gather across processes themselves, with gradients, so the same call gives the
single-process loss on the concatenated batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import all_reduce_sum_with_grad, gather_with_grad, rank, world_size
from .precision import float32_loss


@float32_loss
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


@float32_loss
def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's 2 - 2 cos(p, sg(z)), averaged over the batch (one direction; symmetrise by adding)."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


def _standardize_global(z: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, int]:
    """BatchNorm without affine over the batch of all processes (biased variance, as BN)."""
    n_global = z.shape[0] * world_size()
    mean = all_reduce_sum_with_grad(z.sum(dim=0)) / n_global
    var = all_reduce_sum_with_grad(((z - mean) ** 2).sum(dim=0)) / n_global
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
