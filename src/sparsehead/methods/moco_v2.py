"""MoCo v2 (Chen et al. 2020): queries against a momentum key encoder's key and a queue of keys
from earlier batches.

CHOICE (method.moco_symmetric): false = the official asymmetric loss ctr(q1, k2), enqueueing k2;
true = (ctr(q1, k2) + ctr(q2, k1)) / 2, enqueueing both keys, as many CIFAR implementations.
The key encoder uses plain BatchNorm (no Shuffle BN), as solo-learn's MoCo v2+.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distributed import gather_no_grad
from ..losses import moco_loss
from .base import Method
from .byol import ema_update, frozen_copy


class KeyQueue(nn.Module):
    """A ring buffer of K normalised keys; keys and pointer are buffers, so they are checkpointed."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest entries with `keys` in order, wrapping around the end."""
        size = self.keys.shape[0]
        if keys.shape[0] > size:
            raise ValueError(f"{keys.shape[0]} keys do not fit a queue of {size}")
        index = (self.ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.keys[index] = keys.to(self.keys.dtype)
        self.ptr.copy_((self.ptr + keys.shape[0]) % size)


class MoCoV2(Method):
    def __init__(self, cfg, backbone):
        super().__init__(cfg, backbone)
        self.key_backbone = frozen_copy(self.backbone)
        self.key_projector = frozen_copy(self.projector)
        self.queue = KeyQueue(cfg.method.queue_size, self.embedding_dim)

    def _query_and_key(self, x_query, x_key):
        q = self.projector(self.backbone(x_query))
        with torch.no_grad():
            k = F.normalize(self.key_projector(self.key_backbone(x_key)), dim=1)
        return q, k

    def forward(self, x1, x2):
        tau = self.cfg.method.temperature
        queue = self.queue.keys.clone()  # backward needs the negatives as they were before enqueueing
        q1, k2 = self._query_and_key(x1, x2)
        if self.cfg.method.moco_symmetric:
            q2, k1 = self._query_and_key(x2, x1)
            loss = (moco_loss(q1, k2, queue, tau) + moco_loss(q2, k1, queue, tau)) / 2
            keys = torch.cat([k1, k2])
        else:
            loss, keys = moco_loss(q1, k2, queue, tau), k2
        if self.training:  # evaluation passes leave the queue alone
            self.queue.enqueue(gather_no_grad(keys))
        return loss, {}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        ema_update(self.key_backbone, self.backbone, self.cfg.method.momentum)
        ema_update(self.key_projector, self.projector, self.cfg.method.momentum)
