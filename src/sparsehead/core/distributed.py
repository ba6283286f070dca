"""Process-group helpers for DDP under torchrun (gloo on CPU, NCCL on GPU).

Gathers used inside losses carry gradients (torch.distributed.nn.functional): a plain
dist.all_gather / all_reduce would silently drop or mis-scale them.
"""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    """This process's index among the processes of its node (torchrun's LOCAL_RANK; 0 without it)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def local_world_size() -> int:
    """How many processes torchrun started on this node (LOCAL_WORLD_SIZE; 1 without it)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: torch.device) -> None:
    """Join the process group torchrun describes in the environment (no-op when not launched so)."""
    if not launched_by_torchrun() or is_distributed():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)


def from_main(obj):
    """Rank 0's `obj` (any picklable value) on every rank; `obj` itself when not distributed."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_every_rank(obj) -> list:
    """Every rank's `obj`, by rank, on every rank; [obj] when not distributed."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_bounds(n: int) -> tuple[int, int]:
    """This rank's rows [start, stop) of `n` cut in order into shards of ceil(n / world) rows (the
    last ones shorter, maybe empty): gather_rows puts them back together."""
    size = -(-n // world_size())
    return min(rank() * size, n), min((rank() + 1) * size, n)


@torch.no_grad()
def gather_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """The `n` rows of which each rank holds its shard_bounds(n) part, in order, on every rank: one
    all_gather into one tensor (the shorter shards' padding falls past row n, so no copy is made)."""
    if not is_distributed():
        return x
    size = -(-n // world_size())
    padded = x.new_zeros(size, *x.shape[1:])
    padded[: len(x)] = x
    out = x.new_empty(world_size() * size, *x.shape[1:])
    dist.all_gather(list(out.split(size)), padded)
    return out[:n]


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank's last forward
    under DDP updated its own from its own batch."""
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


# Collectives that carry gradients. torch.distributed.nn.functional's all_gather / all_reduce are
# deprecated since torch 2.14 and their successors are private (_functional_collectives), so the two
# are written here on the public dist API. Every rank's loss depends on every rank's input, so the
# gradient of a rank's input is the SUM over ranks of what their losses send back: an all-reduce.


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[rank() * ctx.rows : (rank() + 1) * ctx.rows]


class _AllReduceSumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks along dim 0; gradients flow back to each rank's piece."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks whose backward sums the gradients as well (Barlow Twins' correlation)."""
    if not is_distributed():
        return x
    return _AllReduceSumWithGrad.apply(x)


@torch.no_grad()
def all_reduce_sum_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum of a statistic over ranks, outside autograd (Sinkhorn sums, predictor statistics)."""
    if not is_distributed():
        return x
    out = x.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The average of `x` over ranks, no gradient (for logging a global loss); a collective."""
    return all_reduce_sum_no_grad(x) / world_size()


def global_moments(x: torch.Tensor, dims: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and biased variance over `dims` of the batch of ALL processes (each holding the same
    batch size), with gradients through the all-reduce, and the global count: the statistics of
    BatchNorm on the concatenated batch (GlobalBatchNorm, Barlow Twins' standardisation)."""
    count = math.prod([x.shape[d] for d in dims]) * world_size()  # a list: a generator breaks torch.compile's graph
    mean = all_reduce_sum_with_grad(x.sum(dim=dims, keepdim=True)) / count
    var = all_reduce_sum_with_grad(((x - mean) ** 2).sum(dim=dims, keepdim=True)) / count
    return mean, var, count


@torch.no_grad()
def shuffled_batch_forward(fn, x: torch.Tensor) -> torch.Tensor:
    """MoCo's Shuffle BN (He et al. 2020, its official batch_shuffle_ddp / batch_unshuffle_ddp):
    fn (the key encoder) on a random sub-batch of the GLOBAL batch on each process, so BatchNorm
    statistics do not come from the queries' own images, outputs sent back to their process. The
    permutation is drawn from the torch random state on every process and rank 0's is used. In one
    process it is fn(x): BatchNorm over the whole batch does not depend on its order."""
    if not is_distributed():
        return fn(x)
    everything = gather_no_grad(x)
    perm = torch.randperm(everything.shape[0]).to(x.device)
    dist.broadcast(perm, src=0)
    mine = perm.view(world_size(), -1)[rank()]
    outputs = gather_no_grad(fn(everything[mine]))
    return outputs[torch.argsort(perm).view(world_size(), -1)[rank()]]
