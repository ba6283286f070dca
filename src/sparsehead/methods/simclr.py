"""SimCLR (Chen et al. 2020): NT-Xent between the embeddings of two views, or (method.loss=huang)
Huang et al.'s revised InfoNCE (papers/002)."""
from ..losses import huang_infonce, nt_xent
from .base import Method


class SimCLR(Method):
    def forward(self, x1, x2):
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        m = self.cfg.method
        if m.loss == "huang":
            return huang_infonce(z1, z2, m.temperature, m.huang_lambda), {}
        return nt_xent(z1, z2, m.temperature), {}
