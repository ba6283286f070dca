"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp cluster codes over prototypes.

Multi-crop as in SwAV's official code: codes come from the global crops only (its crops_for_assign,
augment.global_crops of them, 2 in SwAV), and each code is predicted from every other crop (the other
global crops and every local crop), see sparsehead.methods.losses.swapped_prediction. The crops of
one size go through the backbone together (Method.encode_crops), as the official code: BatchNorm
statistics span all the crops of a size; the head sees each crop on its own.

The queue (method.swav_queue_length, SwAV's queue_length): the normalised embeddings of the global
crops of the last steps (gathered from every process), prepended to the batch's scores in Sinkhorn
once it is full, so that small batches still fill an equal partition over many prototypes. It fills
from epoch method.swav_epoch_queue_starts on (SwAV's epoch_queue_starts). It is a buffer, identical
on every process (so checkpointed with the model and left alone by DDP's buffer broadcast); each
process puts its own share (every world-th row) into the global Sinkhorn, so the codes are those of
the official per-process queues of queue_length / world rows. Prototypes are never frozen.

Prototypes are a bias-free linear layer whose rows are kept on the unit sphere: normalised at
construction and after every optimiser update that went ahead, so each forward sees unit prototypes.

Nothing is read back in a training step: whether the queue is full (its last row written) is a device
bool that picks between the codes with and without the queue. A count of the rows on the host alone
would not be exact (a step the non-finite guard skips puts the queue back, on the device), but it is
an upper bound: until it reaches the queue's length the queue cannot be full and only the codes
without it are computed (after a checkpoint is loaded the count is unknown, and under torch.compile
it is not kept, a changing int the compiled forward would be guarded on: both are). Once it may be
full, the codes without the queue are the extra work, a Sinkhorn over the batch alone (measured with
a 3840-row queue, batch 256 and 3000 prototypes on one CPU thread: 18 ms beside the queue's 1083 ms).
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sparsehead.core.distributed import gather_no_grad, rank, world_size
from sparsehead.core.errors import ConfigError
from sparsehead.core.options import opt
from sparsehead.methods.base import Applied, Method, MethodOutput, register, temperature_opt, where_applied
from sparsehead.methods.losses import sinkhorn_knopp, swapped_prediction
from sparsehead.sparsity import SparsityConfig


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Codes in float32 (or float64) under autocast, as the losses run."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@register("swav")
class SwAV(Method):
    display_name = "SwAV"
    STATE = ("backbone", "projector", "prototypes", "queue")
    MULTI_CROP = True

    @dataclass
    class Params:
        temperature: float = temperature_opt(0.1)
        swav_prototypes: int = opt(
            300,
            "number of prototypes K (paper: 3000 on ImageNet; 300 here for CIFAR-sized data sets and batches)",
            min=1,
        )
        swav_epsilon: float = opt(0.05, "Sinkhorn-Knopp entropy epsilon", min=0.0, exclusive_min=True)
        swav_sinkhorn_iters: int = opt(3, "Sinkhorn-Knopp iterations", min=1)
        swav_queue_length: int = opt(
            0,
            "embeddings of past global crops kept per crop and used in Sinkhorn once full (SwAV's "
            "queue_length, 3840 on ImageNet for batches of 256; 0: no queue); a multiple of "
            "train.batch_size",
            min=0,
        )
        swav_epoch_queue_starts: int = opt(15, "epoch from which the queue fills (SwAV's epoch_queue_starts)", min=0)

    def __init__(self, backbone, projector=None, params=None, **values):
        super().__init__(backbone, projector, params, **values)
        self.prototypes = nn.Linear(self.embedding_dim, self.params.swav_prototypes, bias=False)
        self.normalize_prototypes()
        queue = torch.zeros(self.global_crops, self.params.swav_queue_length, self.embedding_dim)
        self.register_buffer("queue", queue)  # one per crop whose codes are targets
        self.queue_filling = False  # set per epoch by set_epoch
        # Rows each crop's queue took since it was last known empty: it cannot be full before its length.
        self.queue_rows = 0
        self.register_load_state_dict_post_hook(SwAV.queue_loaded)

    @classmethod
    def check(cls, params, batch_size: int, sparsity: SparsityConfig):
        if params.swav_queue_length % batch_size:
            raise ConfigError(
                f"method.swav_queue_length: {params.swav_queue_length} is not a multiple of "
                f"train.batch_size={batch_size} (each step enqueues one batch); "
                f"e.g. method.swav_queue_length={15 * batch_size}"
            )

    @torch.no_grad()
    def normalize_prototypes(self, applied: Applied = True):
        """Each prototype back to unit length, where the step's update went ahead (`applied`, on the device)."""
        weight = self.prototypes.weight
        weight.copy_(where_applied(applied, F.normalize(weight, dim=1), weight))

    @staticmethod
    def queue_loaded(module: "SwAV", incompatible_keys) -> None:
        """A loaded queue may be full: its rows are not counted on the host."""
        module.queue_rows = module.params.swav_queue_length

    def set_epoch(self, epoch):
        self.queue_filling = self.params.swav_queue_length > 0 and epoch >= self.params.swav_epoch_queue_starts

    def forward(self, *views):
        rs = self.encode_crops(views)
        embeddings = [F.normalize(self.projector(r), dim=1) for r in rs]
        scores = [self.prototypes(z) for z in embeddings]
        codes = [
            self.codes(i, at_least_float32(scores[i].detach()), embeddings[i].detach())
            for i in range(self.global_crops)
        ]
        if self.training and self.queue_filling and not torch.compiler.is_compiling():
            self.queue_rows += rs[0].shape[0] * world_size()  # each crop's queue took the gathered batch
        return MethodOutput(
            swapped_prediction(codes, scores, self.params.temperature), {}, rs[0], tuple(embeddings[:2])
        )

    @torch.no_grad()
    def codes(self, crop: int, scores: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Sinkhorn codes of global crop `crop`'s batch, with the queue's scores before it once the
        queue is full (its last row written, decided on the device); then the gathered batch enters the queue."""
        p = self.params
        queue = self.queue[crop]
        q = sinkhorn_knopp(scores, p.swav_epsilon, p.swav_sinkhorn_iters)
        may_be_full = torch.compiler.is_compiling() or p.swav_queue_length <= self.queue_rows
        if self.training and p.swav_queue_length and may_be_full:
            share = queue[rank() :: world_size()]  # this process's part of the global queue
            queued = torch.cat([at_least_float32(share @ self.prototypes.weight.T), scores])
            q_queued = sinkhorn_knopp(queued, p.swav_epsilon, p.swav_sinkhorn_iters)[-embedding.shape[0] :]
            q = torch.where(queue[-1].any(), q_queued, q)
        if self.training and self.queue_filling:
            new = gather_no_grad(embedding).to(queue.dtype)
            queue.copy_(torch.cat([new, queue[: -new.shape[0]]]))  # newest first, as SwAV's code
        return q

    @torch.no_grad()
    def after_step(self, step, total_steps, applied: Applied = True):
        self.normalize_prototypes(applied)
