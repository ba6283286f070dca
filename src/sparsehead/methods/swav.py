"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp cluster codes over prototypes.

Two crops only (no multi-crop), no queue (the batch alone fills the equal partition; a queue
matters for batches much smaller than the number of prototypes), prototypes never frozen.
Prototypes are a bias-free linear layer whose rows are kept on the unit sphere: normalised at
construction and after every optimiser step, so each forward sees unit prototypes.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import swav_loss
from ..options import opt
from .base import Method, MethodOutput, register, temperature_opt


@register("swav")
class SwAV(Method):
    display_name = "SwAV"
    STATE = ("backbone", "projector", "prototypes")

    @dataclass
    class Params:
        temperature: float = temperature_opt(0.1)
        swav_prototypes: int = opt(300, "number of prototypes K (paper: 3000 on ImageNet; 300 here for "
                                        "CIFAR-sized data sets and batches)", min=1)
        swav_epsilon: float = opt(0.05, "Sinkhorn-Knopp entropy epsilon", min=0.0, exclusive_min=True)
        swav_sinkhorn_iters: int = opt(3, "Sinkhorn-Knopp iterations", min=1)

    def __init__(self, backbone, projector=None, params=None, **values):
        super().__init__(backbone, projector, params, **values)
        self.prototypes = nn.Linear(self.embedding_dim, self.params.swav_prototypes, bias=False)
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self):
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, x1, x2):
        r1 = self.backbone(x1)
        s1 = self.prototypes(F.normalize(self.projector(r1), dim=1))
        s2 = self.prototypes(F.normalize(self.projector(self.backbone(x2)), dim=1))
        p = self.params
        return MethodOutput(swav_loss(s1, s2, p.temperature, p.swav_epsilon, p.swav_sinkhorn_iters), {}, r1)

    @torch.no_grad()
    def after_step(self, step, total_steps):
        self.normalize_prototypes()
