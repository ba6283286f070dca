"""BYOL (Grill et al. 2020): an online network with a predictor regresses an EMA target network."""

from dataclasses import dataclass

import torch.nn as nn

from sparsehead.methods.base import MethodOutput, predictor_hidden_dim_opt, register
from sparsehead.methods.losses import byol_loss
from sparsehead.methods.momentum import MomentumMethod, cosine_momentum, momentum_opt
from sparsehead.models.heads import mlp


@register("byol")
class BYOL(MomentumMethod):
    display_name = "BYOL"
    STATE = ("backbone", "projector", "predictor", "target_backbone", "target_projector")
    MOMENTUM_COPIES = ("target_backbone", "target_projector")
    momentum_schedule = staticmethod(cosine_momentum)  # section 3.2: tau_base = 0.99 up to 1

    @dataclass
    class Params:
        momentum: float = momentum_opt(0.99)
        predictor_hidden_dim: int = predictor_hidden_dim_opt()

    def __init__(self, backbone, projector=None, params=None, **values):
        super().__init__(backbone, projector, params, **values)
        self.predictor = self.build_predictor()
        self.add_momentum_copies()

    def build_predictor(self) -> nn.Module:
        """The learned MLP predictor (DirectPred/DirectCopy replace it by a set linear map)."""
        return mlp(self.embedding_dim, self.params.predictor_hidden_dim, self.embedding_dim)

    def forward(self, x1, x2):
        r1, z1, z2 = self.project_views(x1, x2)
        return MethodOutput(self.regress_target(z1, z2, x1, x2), {}, r1, (z1, z2))

    def regress_target(self, z1, z2, x1, x2):
        """The symmetrised BYOL loss of the online projections z1, z2 of views x1, x2."""
        p1, p2 = self.predictor(z1), self.predictor(z2)
        t1, t2 = self.momentum_embed_views(x1, x2)
        return byol_loss(p1, t2) + byol_loss(p2, t1)
