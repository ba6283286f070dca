"""MoCo v3 (Chen, Xie & He 2021): symmetric contrast of predicted queries against momentum keys
of the whole (gathered) batch; no queue. Momentum cosine from method.momentum up to 1."""
import torch

from ..losses import moco_v3_loss
from ..models.heads import mlp
from .base import Method
from .byol import cosine_momentum, ema_update, frozen_copy


class MoCoV3(Method):
    def __init__(self, cfg, backbone):
        super().__init__(cfg, backbone)
        self.predictor = mlp(self.embedding_dim, cfg.method.predictor_hidden_dim, self.embedding_dim)
        self.key_backbone = frozen_copy(self.backbone)
        self.key_projector = frozen_copy(self.projector)

    def forward(self, x1, x2):
        q1 = self.predictor(self.projector(self.backbone(x1)))
        q2 = self.predictor(self.projector(self.backbone(x2)))
        with torch.no_grad():
            k1 = self.key_projector(self.key_backbone(x1))
            k2 = self.key_projector(self.key_backbone(x2))
        tau = self.cfg.method.temperature
        return moco_v3_loss(q1, k2, tau) + moco_v3_loss(q2, k1, tau), {}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        m = cosine_momentum(self.cfg.method.momentum, step, total_steps)
        ema_update(self.key_backbone, self.backbone, m)
        ema_update(self.key_projector, self.projector, m)
