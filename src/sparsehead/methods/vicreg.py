"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on the two embeddings."""
from ..losses import vicreg_loss
from .base import Method


class VICReg(Method):
    def forward(self, x1, x2):
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        m = self.cfg.method
        return vicreg_loss(z1, z2, m.vicreg_sim_coeff, m.vicreg_std_coeff, m.vicreg_cov_coeff), {}
