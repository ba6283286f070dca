"""MoCo's Shuffle BN under 2-process gloo DDP against a reference written here: the key encoder
(BatchNorm in training mode) run on the sub-batches of the shuffled global batch, then unshuffled."""

from __future__ import annotations

import torch
import torch.nn as nn

from ddp_harness import WORLD, run_on_ranks, shard
from sparsehead.core.distributed import shuffled_batch_forward


def _encoder():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4)).train()


def _batch():
    return torch.randn(8, 5, generator=torch.Generator().manual_seed(1))


def _on_rank(rank: int) -> dict:
    encoder, x = _encoder(), _batch()
    torch.manual_seed(7)  # the same torch random state on both ranks (rank 0's permutation is used)
    return {"keys": shuffled_batch_forward(encoder, shard(x, rank))}


def test_shuffle_bn_equals_keys_of_the_shuffled_sub_batches():
    keys = torch.cat([r["keys"] for r in run_on_ranks(_on_rank)])
    encoder, x = _encoder(), _batch()
    torch.manual_seed(7)
    perm = torch.randperm(8)
    with torch.no_grad():
        shuffled = torch.cat([encoder(x[part]) for part in perm.view(WORLD, -1)])  # BN per sub-batch
        expected = torch.empty_like(shuffled)
        expected[perm] = shuffled  # back to the original order
        torch.testing.assert_close(keys, expected)
        assert not torch.allclose(keys, encoder(x), atol=1e-3)  # differs from BN over the whole batch
        assert torch.equal(shuffled_batch_forward(encoder, x), encoder(x))  # one process: plain forward
