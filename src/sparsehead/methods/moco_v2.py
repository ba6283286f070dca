"""MoCo v2 (Chen et al. 2020): queries against a momentum key encoder's key and a queue of keys
from earlier batches.

CHOICE (method.moco_symmetric): false = the official asymmetric loss ctr(q1, k2), enqueueing k2;
true = (ctr(q1, k2) + ctr(q2, k1)) / 2, enqueueing both keys, as many CIFAR implementations.
method.moco_shuffle_bn: MoCo's Shuffle BN under DDP (sparsehead.core.distributed.shuffled_batch_forward);
off by default (plain BatchNorm in the key encoder, as solo-learn's MoCo v2+); a no-op in one process.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sparsehead.core.distributed import gather_no_grad, shuffled_batch_forward
from sparsehead.core.errors import ConfigError
from sparsehead.core.options import opt
from sparsehead.methods.base import MethodOutput, register, temperature_opt
from sparsehead.methods.losses import moco_loss
from sparsehead.methods.momentum import MomentumMethod, constant_momentum, momentum_opt
from sparsehead.sparsity import SparsityConfig


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


@register("moco_v2")
class MoCoV2(MomentumMethod):
    display_name = "MoCo v2"
    STATE = ("backbone", "projector", "key_backbone", "key_projector", "queue")
    MOMENTUM_COPIES = ("key_backbone", "key_projector")
    momentum_schedule = staticmethod(constant_momentum)  # m = 0.999 throughout, as published

    @dataclass
    class Params:
        temperature: float = temperature_opt(0.2)
        momentum: float = momentum_opt(0.999)
        queue_size: int = opt(
            4096,
            "queue length K (paper: 65536 ImageNet, 4096-32768 CIFAR); at least the keys of one "
            "step, and best below the number of training images (else an image's own older key is among "
            "its negatives)",
            min=1,
        )
        moco_symmetric: bool = opt(
            False,
            "false = the official asymmetric loss ctr(q1, k2); true = (ctr(q1, k2) + ctr(q2, k1)) / 2 "
            "with both views' keys enqueued, as many CIFAR implementations",
        )
        moco_shuffle_bn: bool = opt(
            False,
            "MoCo's Shuffle BN under DDP: keys computed on a random sub-batch of the global batch per "
            "process, then sent back (the official code); a no-op in one process",
        )

    def __init__(self, backbone, projector=None, params=None, **values):
        super().__init__(backbone, projector, params, **values)
        self.add_momentum_copies()
        self.queue = KeyQueue(self.params.queue_size, self.embedding_dim)

    @classmethod
    def check(cls, params, batch_size: int, sparsity: SparsityConfig):
        keys_per_step = batch_size * (2 if params.moco_symmetric else 1)
        if params.queue_size < keys_per_step:
            raise ConfigError(
                f"method.queue_size: {params.queue_size} is smaller than the {keys_per_step} keys "
                f"enqueued per step; set method.queue_size>={keys_per_step} or lower train.batch_size"
            )

    @classmethod
    def data_size_problem(cls, params, num_images):
        keys = num_images * (2 if params.moco_symmetric else 1)
        if params.queue_size >= keys:
            return (
                f"method.queue_size: {params.queue_size} keys span all {num_images} training images, so "
                f"older keys of an image would be its own negatives; set method.queue_size<{keys}"
            )
        return None

    def _key(self, x):
        return F.normalize(self.momentum_embed(x), dim=1)

    def _query_and_key(self, x_query, x_key):
        r = self.backbone(x_query)
        q = self.projector(r)
        with torch.no_grad():
            k = shuffled_batch_forward(self._key, x_key) if self.params.moco_shuffle_bn else self._key(x_key)
        return q, k, r

    def forward(self, x1, x2):
        tau = self.params.temperature
        queue = self.queue.keys.clone()  # backward needs the negatives as they were before enqueueing
        q1, k2, r1 = self._query_and_key(x1, x2)
        if self.params.moco_symmetric:
            q2, k1, _ = self._query_and_key(x2, x1)
            loss = (moco_loss(q1, k2, queue, tau) + moco_loss(q2, k1, queue, tau)) / 2
            keys = torch.cat([k1, k2])
        else:
            loss, keys = moco_loss(q1, k2, queue, tau), k2
        if self.training:  # evaluation passes leave the queue alone
            self.queue.enqueue(gather_no_grad(keys))
        return MethodOutput(loss, {}, r1, (q1, q2) if self.params.moco_symmetric else (q1,))
