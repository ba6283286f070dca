"""SparseHead: the L2,1 penalty on a projection head and its sparsity statistics (formulas: docs/references.md, SparseHead).

Groups are the COLUMNS of an nn.Linear weight (shape out x in): one group per input feature,
so a zero column means the layer ignores that input. `weight.norm(dim=1)` would prune output
units instead, which is not the paper's penalty.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .models.heads import linear_layers


def column_norms(weight: torch.Tensor) -> torch.Tensor:
    """||W[:, j]||_2 for every input feature j of an (out, in) weight."""
    return weight.norm(p=2, dim=0)


def l21_norm(weight: torch.Tensor) -> torch.Tensor:
    """||W||_{2,1} = sum_j ||W[:, j]||_2, the sum of the column norms."""
    return column_norms(weight).sum()


def penalized_layers(head: nn.Module, which: str) -> list[nn.Module]:
    """The head's linear layers SparseHead acts on: "last" (paper), "first" or "all"."""
    layers = linear_layers(head)
    if not layers:
        return []
    return {"last": layers[-1:], "first": layers[:1], "all": layers}[which]


def penalty(layers: list[nn.Module]) -> torch.Tensor:
    """Sum of the L2,1 norms of the layers' weights (biases are never penalised)."""
    return sum((l21_norm(layer.weight) for layer in layers), torch.zeros(()))


def support_size(weight: torch.Tensor, threshold: float = 1e-3) -> int:
    """Number of columns whose norm is at least `threshold` times the largest column norm."""
    norms = column_norms(weight.detach())
    return int((norms >= threshold * norms.max().clamp_min(1e-30)).sum())


def group_soft_threshold_(weight: torch.Tensor, step: float) -> None:
    """In place, the proximal map of step * ||W||_{2,1}: W[:, j] <- W[:, j] * max(0, 1 - step /
    ||W[:, j]||). Columns with norm <= step become exactly zero; the others shrink by `step`."""
    norms = column_norms(weight)
    weight.mul_((1 - step / norms.clamp_min(1e-30)).clamp_min(0))


def sparsity_logs(layers: list[nn.Module], threshold: float) -> dict[str, float]:
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
    step, and what to log. Variants live here, not in the loop:
    - mode "penalty": lambda * L2,1 in the loss (the paper); "proximal": no loss term, a group
      soft-threshold by lr * lambda after each optimiser step (proximal SGD's step, also used
      after Adam: see docs/sparsehead.md).
    - target_support: lambda <- lambda * exp(gain * (support_frac - target)) every adapt_every
      steps, within [lam / lam_range, lam * lam_range]. The controlled lambda and the step count
      are this object's state: save state_dict() with each checkpoint for an exact resume."""

    def __init__(self, cfg, head: nn.Module):
        self.cfg = cfg
        self.layers = penalized_layers(head, cfg.layers)
        self.lam = cfg.lam
        self.steps = 0  # optimiser steps taken, for adapt_every

    def loss(self) -> torch.Tensor:
        """lambda * sum of the L2,1 norms of the penalised weights (0 when off or proximal)."""
        if self.lam == 0 or not self.layers or self.cfg.mode == "proximal":
            return torch.zeros((), device=self.layers[0].weight.device if self.layers else "cpu")
        return self.lam * penalty(self.layers)

    @torch.no_grad()
    def after_step(self, lr: float) -> None:
        """Called after each optimiser step with the current learning rate."""
        self.steps += 1
        if self.cfg.mode == "proximal" and self.lam > 0:
            for layer in self.layers:
                group_soft_threshold_(layer.weight, lr * self.lam)
        if self.cfg.target_support is not None and self.layers and self.steps % self.cfg.adapt_every == 0:
            self.lam = adapted_lambda(self.lam, self.support_frac(), self.cfg)

    def support_frac(self) -> float:
        """Kept columns over all penalised layers, as a fraction of their columns."""
        kept = sum(support_size(layer.weight, self.cfg.support_threshold) for layer in self.layers)
        return kept / sum(layer.weight.shape[1] for layer in self.layers)

    def logs(self) -> dict[str, float]:
        l21 = sum(l21_norm(layer.weight.detach()).item() for layer in self.layers)
        return {"lambda": self.lam, "l21": l21, **sparsity_logs(self.layers, self.cfg.support_threshold)}

    def state_dict(self) -> dict:
        return {"lam": self.lam, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.lam, self.steps = float(state["lam"]), int(state["steps"])


def adapted_lambda(lam: float, support_frac: float, cfg) -> float:
    """One multiplicative controller step: more columns kept than the target -> larger lambda."""
    lam = lam * math.exp(cfg.adapt_gain * (support_frac - cfg.target_support))
    return min(max(lam, cfg.lam / cfg.lam_range), cfg.lam * cfg.lam_range)


def head_sparsity(head: nn.Module, which: str = "last", threshold: float = 1e-3) -> list[dict]:
    """For each linear layer SparseHead acts on (`which` as sparsity.layers): its column norms
    (one per input feature, descending), the support size at `threshold` x the largest norm, and
    the L2,1 norm (the analysis report's view of the head; sparsity_logs is the training log's).
    An identity head has none."""
    out = []
    for layer in penalized_layers(head, which):
        w = layer.weight.detach().float().cpu()
        support = support_size(w, threshold)
        out.append({"shape": list(w.shape), "support": support, "support_frac": support / w.shape[1],
                    "support_threshold": threshold, "l21": l21_norm(w).item(),
                    "column_norms": column_norms(w).sort(descending=True).values.tolist()})
    return out
