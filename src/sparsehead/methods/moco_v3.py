"""MoCo v3 (Chen, Xie & He 2021): symmetric contrast of predicted queries against momentum keys
of the whole (gathered) batch; no queue. Momentum cosine from method.momentum up to 1."""

from dataclasses import dataclass

from sparsehead.methods.base import MethodOutput, predictor_hidden_dim_opt, register, temperature_opt
from sparsehead.methods.losses import moco_v3_loss
from sparsehead.methods.momentum import MomentumMethod, cosine_momentum, momentum_opt
from sparsehead.models.heads import mlp


@register("moco_v3")
class MoCoV3(MomentumMethod):
    display_name = "MoCo v3"
    STATE = ("backbone", "projector", "predictor", "key_backbone", "key_projector")
    MOMENTUM_COPIES = ("key_backbone", "key_projector")
    momentum_schedule = staticmethod(cosine_momentum)

    @dataclass
    class Params:
        temperature: float = temperature_opt(0.2)
        momentum: float = momentum_opt(0.99)
        predictor_hidden_dim: int = predictor_hidden_dim_opt()

    def __init__(self, backbone, projector=None, params=None, **values):
        super().__init__(backbone, projector, params, **values)
        self.predictor = mlp(self.embedding_dim, self.params.predictor_hidden_dim, self.embedding_dim)
        self.add_momentum_copies()

    def forward(self, x1, x2):
        r1, z1, z2 = self.project_views(x1, x2)
        q1, q2 = self.predictor(z1), self.predictor(z2)
        k1, k2 = self.momentum_embed_views(x1, x2)
        tau = self.params.temperature
        return MethodOutput(moco_v3_loss(q1, k2, tau) + moco_v3_loss(q2, k1, tau), {}, r1, (z1, z2))
