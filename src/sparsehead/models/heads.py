"""Projection heads h: r -> z as small composable modules (formulas: docs/references.md, projection
heads, Jing et al. 2022 Table 2).

Trainable: linear, mlp, diagonal, orthogonal. Fixed (buffers, no gradient, saved in the
state_dict): lowrank, lowrank_diagonal. identity has no head at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import orthogonal

from sparsehead.core.options import opt
from sparsehead.core.registry import Registry


@dataclass
class HeadConfig:
    kind: str = opt(
        "mlp",
        "projection head, a name in models.heads.HEADS: identity (none), linear, mlp; Jing et al. 2022 "
        "Table 2: diagonal (trainable z = w * r), lowrank (fixed U diag(1 x rank, 0...) V^T, U and V random "
        "orthogonal), lowrank_diagonal (fixed diag(1 x rank, 0...) = DirectCLR), orthogonal (a linear layer "
        "kept orthogonal); the last four keep the backbone's dimension",
    )
    hidden_dim: int = opt(512, "hidden width of the MLP head", min=1)
    out_dim: int = opt(
        128, "embedding dimension m of the linear and mlp heads (the others keep the backbone's dimension)", min=1
    )
    num_layers: int = opt(2, "linear layers in the MLP head (2 or 3)", min=2, max=3)
    last_bn: bool = opt(False, "BatchNorm after the last linear layer of the MLP head")
    rank: Optional[int] = opt(
        None,
        "d0 of the lowrank / lowrank_diagonal heads, at most the backbone's feature dimension "
        "(null: 360/2048 of it, DirectCLR's ratio; 90 for 512 features)",
        min=1,
    )


# DirectCLR's d0 = 360 of ResNet-50's 2048 features (Jing et al. 2022); the default rank keeps that ratio.
DIRECTCLR_RANK_RATIO = 360 / 2048


def mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, last_bn: bool = False, last_bn_affine: bool = True
) -> nn.Sequential:
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


class Diagonal(nn.Module):
    """z = r * w elementwise, i.e. z = diag(w) r. The diagonal is stored as a (1, d) row: column j
    of that row holds the one non-zero entry of column j of diag(w), so the column-wise SparseHead
    helpers (L2,1 = sum_j |w_j|, support, proximal step) apply to it unchanged."""

    def __init__(self, diagonal: torch.Tensor, trainable: bool = True):
        super().__init__()
        weight = diagonal.detach().clone().reshape(1, -1)
        if trainable:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class FixedLinear(nn.Module):
    """z = W r with a fixed W (a buffer: no gradient, not optimised, but saved with the model)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


def default_rank(in_dim: int) -> int:
    return max(1, round(in_dim * DIRECTCLR_RANK_RATIO))


def rank_mask(dim: int, rank: int) -> torch.Tensor:
    """(1, ..., 1, 0, ..., 0): `rank` ones, the singular values of the fixed low-rank heads."""
    return (torch.arange(dim) < rank).float()


def random_orthogonal(dim: int) -> torch.Tensor:
    """A Haar-random orthogonal matrix (QR of a Gaussian, signs fixed by diag(R)), drawn from
    torch's global generator so a seeded run builds the same head."""
    q, r = torch.linalg.qr(torch.randn(dim, dim))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def low_rank_matrix(dim: int, rank: int) -> torch.Tensor:
    """W = U diag(rank_mask) V^T between two independent random orthogonal matrices."""
    u, v = random_orthogonal(dim), random_orthogonal(dim)
    return (u * rank_mask(dim, rank)) @ v.T


HEADS = Registry("head", "head.kind")


def head(name: str, uses: tuple[str, ...] = (), sparsehead: bool = True, square: bool = False):
    """Register `build(in_dim, hidden_dim, out_dim, num_layers, last_bn, rank) -> nn.Module` as
    head.kind=`name`. Declared: `uses`, the head.* keys it reads (shown in --help; the section is
    shared by every kind, so one config can sweep head.kind); `sparsehead`, whether it has a
    trainable linear map with meaningful column groups for the L2,1 penalty; `square`, whether it
    keeps the backbone's dimension."""

    def decorate(build):
        build.uses, build.sparsehead, build.square = uses, sparsehead, square
        return HEADS.register(name)(build)

    return decorate


@head("identity", sparsehead=False, square=True)
def _identity(in_dim, hidden_dim, out_dim, num_layers, last_bn, rank):
    return nn.Identity()


@head("linear", uses=("out_dim",))
def _linear(in_dim, hidden_dim, out_dim, num_layers, last_bn, rank):
    return nn.Sequential(nn.Linear(in_dim, out_dim))


@head("mlp", uses=("hidden_dim", "out_dim", "num_layers", "last_bn"))
def _mlp(in_dim, hidden_dim, out_dim, num_layers, last_bn, rank):
    return mlp(in_dim, hidden_dim, out_dim, num_layers, last_bn)


@head("diagonal", square=True)
def _diagonal(in_dim, hidden_dim, out_dim, num_layers, last_bn, rank):
    return nn.Sequential(Diagonal(torch.ones(in_dim)))


@head("lowrank", uses=("rank",), sparsehead=False, square=True)
def _lowrank(in_dim, hidden_dim, out_dim, num_layers, last_bn, rank):
    return nn.Sequential(FixedLinear(low_rank_matrix(in_dim, checked_rank(in_dim, rank))))


@head("lowrank_diagonal", uses=("rank",), sparsehead=False, square=True)
def _lowrank_diagonal(in_dim, hidden_dim, out_dim, num_layers, last_bn, rank):
    return nn.Sequential(Diagonal(rank_mask(in_dim, checked_rank(in_dim, rank)), trainable=False))


@head("orthogonal", sparsehead=False, square=True)
def _orthogonal(in_dim, hidden_dim, out_dim, num_layers, last_bn, rank):
    # matrix-exponential map for a square weight, as Jing et al. 2022's ExpM; its columns all have
    # norm 1, so the L2,1 penalty would be a constant
    return nn.Sequential(orthogonal(nn.Linear(in_dim, in_dim)))


def checked_rank(in_dim: int, rank: Optional[int]) -> int:
    rank = default_rank(in_dim) if rank is None else rank
    if not 1 <= rank <= in_dim:
        raise ValueError(f"head.rank={rank} must be between 1 and the {in_dim} backbone features")
    return rank


def build_head(
    kind: str,
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    last_bn: bool = False,
    rank: Optional[int] = None,
) -> nn.Module:
    """The head `kind` (a name in HEADS) on in_dim features. diagonal, lowrank, lowrank_diagonal and
    orthogonal are square (in_dim -> in_dim) as in Jing et al. 2022; `rank` is d0 of the low-rank
    heads (None: default)."""
    if kind not in HEADS:
        raise ValueError(f"unknown head kind {kind!r}")
    return HEADS[kind](in_dim, hidden_dim, out_dim, num_layers, last_bn, rank)


def linear_layers(head: nn.Module) -> list[nn.Module]:
    """The head's trainable linear maps in forward order (the candidates for SparseHead): nn.Linear
    layers and trainable diagonals. Excluded: fixed maps (their weight is a buffer) and the
    orthogonal head, whose parametrised weight is recomputed each call (its column norms are all
    1, so an L2,1 penalty on it is a constant)."""
    return [m for m in head.modules() if isinstance(m, (nn.Linear, Diagonal)) and isinstance(m.weight, nn.Parameter)]


def out_dim(head: nn.Module, in_dim: int) -> int:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else in_dim
