"""Projection heads h: r -> z as small composable modules (SPEC section 3)."""
from __future__ import annotations

import torch.nn as nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, last_bn: bool = False,
        last_bn_affine: bool = True) -> nn.Sequential:
    """Linear layers with BatchNorm + ReLU between them (the SimCLR / SparseHead head)."""
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i in range(num_layers):
        last = i == num_layers - 1
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=not (last and last_bn)))
        if not last:
            layers += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=last_bn_affine))
    return nn.Sequential(*layers)


def build_head(kind: str, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
               last_bn: bool = False) -> nn.Module:
    if kind == "identity":
        return nn.Identity()
    if kind == "linear":
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    if kind == "mlp":
        return mlp(in_dim, hidden_dim, out_dim, num_layers, last_bn)
    raise ValueError(f"unknown head kind {kind!r}")


def linear_layers(head: nn.Module) -> list[nn.Linear]:
    """The head's nn.Linear layers in forward order (the candidates for SparseHead)."""
    return [m for m in head.modules() if isinstance(m, nn.Linear)]


def out_dim(head: nn.Module, in_dim: int) -> int:
    layers = linear_layers(head)
    return layers[-1].out_features if layers else in_dim
