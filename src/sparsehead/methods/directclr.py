"""DirectCLR (Jing et al. 2022, papers/003): no projector; InfoNCE on a fixed sub-vector r[:, :d0].

The "head" is the slice itself, so embed() gives z = r[:, :d0], and head.* is ignored. It has no
linear layer, so SparseHead has nothing to act on (config validation refuses sparsity.lam > 0).
"""
import torch.nn as nn

from ..config import ConfigError
from ..losses import directclr_loss
from .base import Method

PAPER_DIM, PAPER_FEATURES = 360, 2048  # d0 for ResNet-50's 2048-d representation


class FirstDims(nn.Module):
    """z = r[:, :dim]: the sub-vector the loss sees (slice first; the loss normalises it)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, r):
        return r[:, :self.dim]

    def extra_repr(self):
        return f"dim={self.dim}"


def subvector_dim(configured: int | None, feature_dim: int) -> int:
    """d0 as configured, or the paper's 360/2048 of the feature dimension (rounded, at least 1)."""
    if configured is None:
        return max(1, round(feature_dim * PAPER_DIM / PAPER_FEATURES))
    if configured > feature_dim:
        raise ConfigError(f"method.directclr_dim: {configured} exceeds the backbone's feature dimension "
                          f"{feature_dim}; give at most {feature_dim}, or null for "
                          f"{PAPER_DIM}/{PAPER_FEATURES} of it")
    return configured


class DirectCLR(Method):
    def __init__(self, cfg, backbone):
        super().__init__(cfg, backbone)
        self.embedding_dim = self.projector.dim

    def build_projector(self, h, in_dim):  # ignores the head section: z is r's first d0 features
        return FirstDims(subvector_dim(self.cfg.method.directclr_dim, in_dim))

    def forward(self, x1, x2):
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        return directclr_loss(z1, z2, self.cfg.method.temperature), {}
