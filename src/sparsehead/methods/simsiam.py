"""SimSiam (Chen & He 2021): a predictor regresses the other view's stop-gradient embedding; no
negatives, no EMA target.

The projector is the `head` section's, so SparseHead comparisons share heads across methods,
except that a last BatchNorm (head.last_bn=true) has no affine parameters, as published. The
published recipe is head.kind=mlp, head.num_layers=3, head.last_bn=true (configs/cifar10_simsiam.yaml)
and a bottleneck predictor: method.predictor_hidden_dim = head.out_dim / 4.
"""

from dataclasses import dataclass

from sparsehead.methods.base import Method, MethodOutput, predictor_hidden_dim_opt, register
from sparsehead.methods.losses import simsiam_loss
from sparsehead.models.heads import HeadConfig, mlp


@register("simsiam")
class SimSiam(Method):
    display_name = "SimSiam"
    STATE = ("backbone", "projector", "predictor")

    @dataclass
    class Params:
        predictor_hidden_dim: int = predictor_hidden_dim_opt()

    def __init__(self, backbone, projector=None, params=None, **values):
        super().__init__(backbone, projector, params, **values)
        self.predictor = mlp(self.embedding_dim, self.params.predictor_hidden_dim, self.embedding_dim)

    @classmethod
    def projector_from_config(cls, head: HeadConfig, in_dim, params):
        if head.kind == "mlp":
            return mlp(in_dim, head.hidden_dim, head.out_dim, head.num_layers, head.last_bn, last_bn_affine=False)
        return super().projector_from_config(head, in_dim, params)

    def forward(self, x1, x2):
        r1, z1, z2 = self.project_views(x1, x2)
        return MethodOutput(simsiam_loss(self.predictor(z1), self.predictor(z2), z1, z2), {}, r1, (z1, z2))
