"""DirectCLR (Jing et al. 2022, Jing et al. 2022): no projector; InfoNCE on a fixed sub-vector r[:, :d0].

The "head" is the slice itself, so embed() gives z = r[:, :d0], and head.* is ignored. It has no
linear layer, so SparseHead has nothing to act on (config validation refuses sparsity.lam > 0).
"""

from dataclasses import dataclass
from typing import Optional

import torch.nn as nn

from sparsehead.core.errors import ConfigError
from sparsehead.core.options import opt
from sparsehead.methods.base import Method, MethodOutput, register, temperature_opt
from sparsehead.methods.losses import directclr_loss
from sparsehead.models.heads import HeadConfig
from sparsehead.sparsity import SparsityConfig, cannot_act, sparsity_active

PAPER_DIM, PAPER_FEATURES = 360, 2048  # d0 for ResNet-50's 2048-d representation


class FirstDims(nn.Module):
    """z = r[:, :dim]: the sub-vector the loss sees (slice first; the loss normalises it)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, r):
        return r[:, : self.dim]

    def extra_repr(self):
        return f"dim={self.dim}"


def subvector_dim(configured: int | None, feature_dim: int) -> int:
    """d0 as configured, or the paper's 360/2048 of the feature dimension (rounded, at least 1)."""
    if configured is None:
        return max(1, round(feature_dim * PAPER_DIM / PAPER_FEATURES))
    if configured > feature_dim:
        raise ConfigError(
            f"method.directclr_dim: {configured} exceeds the backbone's feature dimension "
            f"{feature_dim}; give at most {feature_dim}, or null for "
            f"{PAPER_DIM}/{PAPER_FEATURES} of it"
        )
    return configured


@register("directclr")
class DirectCLR(Method):
    display_name = "DirectCLR"
    STATE = ("backbone",)  # the slice r[:, :d0] has no weights

    @dataclass
    class Params:
        temperature: float = temperature_opt(0.1)
        directclr_dim: Optional[int] = opt(
            None,
            "sub-vector size d0: the loss sees r[:, :d0] (null: 360/2048 of the backbone's feature "
            "dimension, the paper's ratio for ResNet-50, rounded; must not exceed that dimension)",
            min=1,
        )

    def __init__(self, backbone, projector=None, params=None, **values):
        super().__init__(backbone, projector, params, **values)
        self.embedding_dim = self.projector.dim

    @classmethod
    def projector_from_config(cls, head: HeadConfig, in_dim, params):  # ignores the head section
        return FirstDims(subvector_dim(params.directclr_dim, in_dim))

    def default_projector(self, in_dim):  # z is r's first d0 features
        return FirstDims(subvector_dim(self.params.directclr_dim, in_dim))

    @classmethod
    def check(cls, params, batch_size: int, sparsity: SparsityConfig):
        if sparsity_active(sparsity):
            raise ConfigError(
                cannot_act(
                    sparsity,
                    "method.name=directclr",
                    "it has no projection head: it ignores head.*",
                    "method.name to another method",
                )
            )

    def forward(self, x1, x2):
        r1, z1, z2 = self.project_views(x1, x2)
        return MethodOutput(directclr_loss(z1, z2, self.params.temperature), {}, r1, (z1, z2))
