"""SimCLR (Chen et al. 2020): NT-Xent between the embeddings of two views."""
from ..losses import nt_xent
from .base import Method


class SimCLR(Method):
    def forward(self, x1, x2):
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        return nt_xent(z1, z2, self.cfg.method.temperature), {}
