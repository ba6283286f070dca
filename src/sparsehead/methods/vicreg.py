"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on the two embeddings."""

from dataclasses import dataclass

from sparsehead.core.options import opt
from sparsehead.methods.base import Method, MethodOutput, register
from sparsehead.methods.losses import vicreg_loss


@register("vicreg")
class VICReg(Method):
    display_name = "VICReg"

    @dataclass
    class Params:
        vicreg_sim_coeff: float = opt(25.0, "invariance (MSE) weight", min=0.0)
        vicreg_std_coeff: float = opt(25.0, "variance (std hinge) weight", min=0.0)
        vicreg_cov_coeff: float = opt(1.0, "covariance (off-diagonal) weight", min=0.0)

    def forward(self, x1, x2):
        r1, z1, z2 = self.project_views(x1, x2)
        p = self.params
        return MethodOutput(
            vicreg_loss(z1, z2, p.vicreg_sim_coeff, p.vicreg_std_coeff, p.vicreg_cov_coeff), {}, r1, (z1, z2)
        )
