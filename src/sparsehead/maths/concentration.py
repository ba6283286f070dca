"""How concentrated a set of non-negative values is (SparseHead's column norms: the training log and
the analysis report of a head)."""

from __future__ import annotations

import math

import torch


def top_share(norms: torch.Tensor, fraction: float = 0.1) -> float:
    """Share of the total held by the largest `fraction` of the values (0.1 for equal ones): how
    concentrated a layer's column norms are."""
    x = norms.detach().double().flatten().sort(descending=True).values
    total = x.sum()
    return float(x[: max(1, math.ceil(fraction * x.numel()))].sum() / total) if total > 0 else 0.0


def gini(norms: torch.Tensor) -> float:
    """Gini coefficient of non-negative values: 0 when all are equal, (n - 1) / n when one holds all."""
    x = norms.detach().double().flatten().sort().values
    n, total = x.numel(), x.sum()
    if total == 0:
        return 0.0
    ranks = torch.arange(1, n + 1, dtype=x.dtype)
    return float(2 * (ranks * x).sum() / (n * total) - (n + 1) / n)
