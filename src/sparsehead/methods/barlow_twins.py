"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two views' embeddings to I."""

from dataclasses import dataclass

from sparsehead.core.options import opt
from sparsehead.methods.base import Method, MethodOutput, register
from sparsehead.methods.losses import barlow_twins_loss


@register("barlow_twins")
class BarlowTwins(Method):
    display_name = "Barlow Twins"

    @dataclass
    class Params:
        lambda_offdiag: float = opt(0.0051, "off-diagonal weight lambda", min=0.0)

    def forward(self, x1, x2):
        r1, z1, z2 = self.project_views(x1, x2)
        return MethodOutput(barlow_twins_loss(z1, z2, self.params.lambda_offdiag), {}, r1, (z1, z2))
