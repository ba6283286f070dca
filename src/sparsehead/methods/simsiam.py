"""SimSiam (Chen & He 2021): a predictor regresses the other view's stop-gradient embedding; no
negatives, no EMA target.

The projector is the `head` section's, so SparseHead comparisons share heads across methods,
except that a last BatchNorm (head.last_bn=true) has no affine parameters, as published. The
published recipe is head.kind=mlp, head.num_layers=3, head.last_bn=true (configs/cifar10_simsiam.yaml)
and a bottleneck predictor: method.predictor_hidden_dim = head.out_dim / 4.
"""
from ..losses import simsiam_loss
from ..models.heads import mlp
from .base import Method


class SimSiam(Method):
    def __init__(self, cfg, backbone):
        super().__init__(cfg, backbone)
        self.predictor = mlp(self.embedding_dim, cfg.method.predictor_hidden_dim, self.embedding_dim)

    def build_projector(self, h, in_dim):
        if h.kind == "mlp":
            return mlp(in_dim, h.hidden_dim, h.out_dim, h.num_layers, h.last_bn, last_bn_affine=False)
        return super().build_projector(h, in_dim)

    def forward(self, x1, x2):
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        return simsiam_loss(self.predictor(z1), self.predictor(z2), z1, z2), {}
