"""The pretraining k-NN spread over two gloo processes (evaluate/knn_shards.py) equals the one
process k-NN on every feature: each rank extracts its shard, the training features are gathered,
the test shards' correct counts summed. Through the one harness, tests/ddp_harness.py."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY
from ddp_harness import run_on_ranks
from sparsehead import config
from sparsehead.core import distributed as dist
from sparsehead.data import datasets
from sparsehead.data.views import ViewGenerator
from sparsehead.evaluate.features import extract
from sparsehead.evaluate.knn import knn_report
from sparsehead.runs.model import build_model
from sparsehead.training.monitors import knn_summary

CPU = torch.device("cpu")
# An odd training set: the two ranks' shards differ in length.
OVERRIDES = TINY + ["data.subset=301", "eval.knn_k=7"]


def _setup():
    cfg = config.load(None, OVERRIDES)
    torch.manual_seed(0)
    method = build_model(cfg)
    train = datasets.load(cfg.data, "train")
    views = ViewGenerator(cfg.augment, cfg.data.image_size, *train.channel_stats())
    return cfg, method, views


def _on_rank(rank: int) -> dict:
    cfg, method, views = _setup()
    if rank == 1:  # as after a DDP step: this rank's BatchNorm statistics from its own batch
        for module in method.backbone.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean += 0.5
    rows = {f"rows{n}": dist.gather_rows(torch.arange(n * 1.0)[slice(*dist.shard_bounds(n))], n) for n in (1, 5)}
    summary = knn_summary(method, cfg, views, CPU)
    return {"summary": torch.tensor([summary["knn7_top1"], summary["knn200_weighted_top1"]]), **rows}


@pytest.fixture(scope="module")
def ranks():
    return run_on_ranks(_on_rank)


def test_every_rank_gets_the_one_process_knn(ranks):
    cfg, method, views = _setup()
    train, test = datasets.load(cfg.data, "train"), datasets.load(cfg.data, "test")
    assert len(train) % 2 == 1
    r_train, _ = extract(method, train, views, CPU)
    r_test, _ = extract(method, test, views, CPU)
    report = knn_report(r_train, train.labels, r_test, test.labels, k=7, k_weighted=200, temperature=0.07)
    expected = torch.tensor([report["top1"], report["weighted_top1"]])
    for result in ranks:
        torch.testing.assert_close(result["summary"], expected, rtol=0, atol=0)
    assert knn_summary(method, cfg, views, CPU) == {
        "knn7_top1": report["top1"],
        "knn200_weighted_top1": report["weighted_top1"],
    }


def test_rows_sharded_unevenly_are_gathered_in_order(ranks):
    for result in ranks:  # 5 rows: shards of 3 and 2; 1 row: rank 1's shard is empty
        torch.testing.assert_close(result["rows5"], torch.arange(5.0))
        torch.testing.assert_close(result["rows1"], torch.arange(1.0))
