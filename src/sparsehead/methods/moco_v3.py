"""MoCo v3 (Chen, Xie & He 2021): symmetric contrast of predicted queries against momentum keys
of the whole (gathered) batch; no queue. Momentum cosine from method.momentum up to 1."""
from dataclasses import dataclass

import torch

from sparsehead.methods.base import Method, MethodOutput, register, temperature_opt
from sparsehead.methods.byol import cosine_momentum, ema_update, frozen_copy, momentum_opt, predictor_hidden_dim_opt
from sparsehead.methods.losses import moco_v3_loss
from sparsehead.models.heads import mlp


@register("moco_v3")
class MoCoV3(Method):
    display_name = "MoCo v3"
    STATE = ("backbone", "projector", "predictor", "key_backbone", "key_projector")

    @dataclass
    class Params:
        temperature: float = temperature_opt(0.2)
        momentum: float = momentum_opt(0.99)
        predictor_hidden_dim: int = predictor_hidden_dim_opt()

    def __init__(self, backbone, projector=None, params=None, **values):
        super().__init__(backbone, projector, params, **values)
        self.predictor = mlp(self.embedding_dim, self.params.predictor_hidden_dim, self.embedding_dim)
        self.key_backbone = frozen_copy(self.backbone)
        self.key_projector = frozen_copy(self.projector)

    def forward(self, x1, x2):
        r1 = self.backbone(x1)
        q1 = self.predictor(self.projector(r1))
        q2 = self.predictor(self.projector(self.backbone(x2)))
        with torch.no_grad():
            k1 = self.key_projector(self.key_backbone(x1))
            k2 = self.key_projector(self.key_backbone(x2))
        tau = self.params.temperature
        return MethodOutput(moco_v3_loss(q1, k2, tau) + moco_v3_loss(q2, k1, tau), {}, r1)

    @torch.no_grad()
    def after_step(self, step, total_steps):
        m = cosine_momentum(self.params.momentum, step, total_steps)
        ema_update(self.key_backbone, self.backbone, m)
        ema_update(self.key_projector, self.projector, m)
