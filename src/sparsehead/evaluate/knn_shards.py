"""The k-NN report of a model under DDP, spread over the ranks (the pretraining monitors').

Each rank extracts its shard of the training and the test images; the training features are
gathered on every rank (the bank), each rank classifies its shard of the test set against the
whole bank and the correct counts are summed. Every rank works, and every rank reaches each
collective at the same point: none waits in one while another extracts alone. In one process it is
knn_report on all the features.
"""

from __future__ import annotations

import torch

from sparsehead.core import distributed as dist
from sparsehead.data.evalset import EvalSet
from sparsehead.data.views import ViewGenerator
from sparsehead.evaluate.features import extract
from sparsehead.evaluate.knn import REPORT_KEYS, bank_dtype, feature_bank, knn_predict, report_votes


def _shard_features(method, data: EvalSet, views: ViewGenerator, device) -> tuple[torch.Tensor, int, int]:
    """r of this rank's shard of `data`, and the shard's bounds."""
    start, stop = dist.shard_bounds(len(data))
    r, _ = extract(method, data, views, device, indices=range(start, stop))
    if start == stop:  # a set smaller than the ranks: an empty shard of the right width
        r = torch.empty(0, method.backbone.feature_dim)
    return r, start, stop


@torch.no_grad()
def sharded_knn_report(
    method,
    train: EvalSet,
    test: EvalSet,
    views: ViewGenerator,
    device: torch.device,
    k: int,
    k_weighted: int,
    temperature: float,
    batch_size: int,
) -> dict[str, float]:
    """knn_report (evaluate/knn.py) of the frozen backbone's r, with every rank's share of the work."""
    dist.broadcast_buffers(method.backbone)  # the BatchNorm statistics of rank 0, which checkpoints
    r_train, _, _ = _shard_features(method, train, views, device)
    # One bank precision for all ranks: float16 if float32 does not fit on any of them.
    fits = bank_dtype(len(train), r_train.shape[1], device) == torch.float32
    dtype = torch.float32 if all(dist.from_every_rank(fits)) else torch.float16
    bank = dist.gather_rows(feature_bank(r_train, device, dtype), len(train))
    del r_train
    r_test, start, stop = _shard_features(method, test, views, device)
    preds = knn_predict(bank, train.labels, r_test, report_votes(k, k_weighted, temperature), batch_size)
    correct = (preds == test.labels[start:stop]).sum(dim=1).to(device)
    correct = dist.all_reduce_sum_no_grad(correct).cpu()
    return dict(zip(REPORT_KEYS, (correct.double() / len(test)).tolist()))
