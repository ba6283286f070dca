"""BYOL (Grill et al. 2020): an online network with a predictor regresses an EMA target network."""
import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from sparsehead.core.options import opt
from sparsehead.methods.base import Method, MethodOutput, register
from sparsehead.methods.losses import byol_loss
from sparsehead.models.heads import mlp


def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online; buffers (BN statistics) copied."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy moved only by ema_update: excluded from the optimiser and from SparseHead."""
    return copy.deepcopy(module).requires_grad_(False)


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2: from tau_base up to 1."""
    return 1 - (1 - base) * (math.cos(math.pi * step / max(total_steps, 1)) + 1) / 2


def momentum_opt(default: float):
    return opt(default, "base EMA momentum of the target / key network (cosine schedule to 1 where the "
                        "method has one)", min=0.0, max=1.0)


def predictor_hidden_dim_opt():
    return opt(512, "predictor hidden width (SimSiam: its bottleneck, published head.out_dim / 4)", min=1)


@register("byol")
class BYOL(Method):
    display_name = "BYOL"
    STATE = ("backbone", "projector", "predictor", "target_backbone", "target_projector")

    @dataclass
    class Params:
        momentum: float = momentum_opt(0.99)
        predictor_hidden_dim: int = predictor_hidden_dim_opt()

    def __init__(self, backbone, projector=None, params=None, **values):
        super().__init__(backbone, projector, params, **values)
        self.predictor = self.build_predictor()
        # The target is updated only by EMA: frozen for the optimiser.
        self.target_backbone = frozen_copy(self.backbone)
        self.target_projector = frozen_copy(self.projector)

    def build_predictor(self) -> nn.Module:
        """The learned MLP predictor (DirectPred/DirectCopy replace it by a set linear map)."""
        return mlp(self.embedding_dim, self.params.predictor_hidden_dim, self.embedding_dim)

    def forward(self, x1, x2):
        r1, z1, z2 = self.project_views(x1, x2)
        return MethodOutput(self.regress_target(z1, z2, x1, x2), {}, r1)

    def regress_target(self, z1, z2, x1, x2):
        """The symmetrised BYOL loss of the online projections z1, z2 of views x1, x2."""
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(x1))
            t2 = self.target_projector(self.target_backbone(x2))
        return byol_loss(p1, t2) + byol_loss(p2, t1)

    @torch.no_grad()
    def after_step(self, step, total_steps):
        m = cosine_momentum(self.params.momentum, step, total_steps)
        ema_update(self.target_backbone, self.backbone, m)
        ema_update(self.target_projector, self.projector, m)
