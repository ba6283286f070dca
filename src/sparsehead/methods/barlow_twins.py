"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two views' embeddings to I."""
from ..losses import barlow_twins_loss
from .base import Method


class BarlowTwins(Method):
    def forward(self, x1, x2):
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        return barlow_twins_loss(z1, z2, self.cfg.method.lambda_offdiag), {}
