"""SparseHead: the L2,1 penalty on a projection head and its sparsity statistics (SPEC section 1).

Groups are the COLUMNS of an nn.Linear weight (shape out x in): one group per input feature,
so a zero column means the layer ignores that input. `weight.norm(dim=1)` would prune output
units instead, which is not the paper's penalty.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .models.heads import linear_layers


def column_norms(weight: torch.Tensor) -> torch.Tensor:
    """||W[:, j]||_2 for every input feature j of an (out, in) weight."""
    return weight.norm(p=2, dim=0)


def l21_norm(weight: torch.Tensor) -> torch.Tensor:
    """||W||_{2,1} = sum_j ||W[:, j]||_2, the sum of the column norms."""
    return column_norms(weight).sum()


def penalized_layers(head: nn.Module, which: str) -> list[nn.Linear]:
    """The head's linear layers SparseHead acts on: "last" (paper), "first" or "all"."""
    layers = linear_layers(head)
    if not layers:
        return []
    return {"last": layers[-1:], "first": layers[:1], "all": layers}[which]


def penalty(layers: list[nn.Linear]) -> torch.Tensor:
    """Sum of the L2,1 norms of the layers' weights (biases are never penalised)."""
    return sum((l21_norm(layer.weight) for layer in layers), torch.zeros(()))


def support_size(weight: torch.Tensor, threshold: float = 1e-3) -> int:
    """Number of columns whose norm is at least `threshold` times the largest column norm."""
    norms = column_norms(weight.detach())
    return int((norms >= threshold * norms.max().clamp_min(1e-30)).sum())


def sparsity_logs(layers: list[nn.Linear], threshold: float) -> dict[str, float]:
    """Per penalised layer: support size, its fraction, and the column-norm summary."""
    logs: dict[str, float] = {}
    for i, layer in enumerate(layers):
        norms = column_norms(layer.weight.detach()).float()
        tag = f"head{i}" if len(layers) > 1 else "head"
        logs[f"{tag}/support"] = support_size(layer.weight, threshold)
        logs[f"{tag}/support_frac"] = logs[f"{tag}/support"] / norms.numel()
        logs[f"{tag}/colnorm_max"] = norms.max().item()
        logs[f"{tag}/colnorm_median"] = norms.median().item()
        logs[f"{tag}/colnorm_min"] = norms.min().item()
    return logs


class SparseHeadRegularizer:
    """What the training loop needs of SparseHead: the penalty term, the work after an optimiser
    step, and what to log. Variants (proximal step, adaptive lambda) live here, not in the loop."""

    def __init__(self, cfg, head: nn.Module):
        self.cfg = cfg
        self.layers = penalized_layers(head, cfg.layers)
        self.lam = cfg.lam

    def loss(self) -> torch.Tensor:
        """lambda * sum of the L2,1 norms of the penalised weights (0 when lambda is 0)."""
        if self.lam == 0 or not self.layers:
            return torch.zeros((), device=self.layers[0].weight.device if self.layers else "cpu")
        return self.lam * penalty(self.layers)

    @torch.no_grad()
    def after_step(self, lr: float) -> None:
        """Called after each optimiser step with the current learning rate."""

    def logs(self) -> dict[str, float]:
        return {"lambda": self.lam, **sparsity_logs(self.layers, self.cfg.support_threshold)}
