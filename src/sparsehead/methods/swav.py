"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp cluster codes over prototypes.

Two crops only (no multi-crop), no queue (the batch alone fills the equal partition; a queue
matters for batches much smaller than the number of prototypes), prototypes never frozen.
Prototypes are a bias-free linear layer whose rows are kept on the unit sphere: normalised at
construction and after every optimiser step, so each forward sees unit prototypes.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import swav_loss
from .base import Method


class SwAV(Method):
    def __init__(self, cfg, backbone):
        super().__init__(cfg, backbone)
        self.prototypes = nn.Linear(self.embedding_dim, cfg.method.swav_prototypes, bias=False)
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self):
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, x1, x2):
        s1 = self.prototypes(F.normalize(self.projector(self.backbone(x1)), dim=1))
        s2 = self.prototypes(F.normalize(self.projector(self.backbone(x2)), dim=1))
        m = self.cfg.method
        return swav_loss(s1, s2, m.temperature, m.swav_epsilon, m.swav_sinkhorn_iters), {}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        self.normalize_prototypes()
