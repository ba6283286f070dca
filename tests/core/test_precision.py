"""train.precision / channels_last: device defaults, float32 losses under autocast, a run in bf16."""

import json

import pytest
import torch

from sparsehead.config import ConfigError
from sparsehead.core.precision import autocast, resolve_precision
from sparsehead.core.sync_batchnorm import GlobalBatchNorm, convert_sync_batchnorm
from sparsehead.methods.losses import barlow_twins_loss, byol_loss, nt_xent
from sparsehead.training.loop import pretrain

CPU = torch.device("cpu")


def test_precision_defaults_and_fp16_needs_cuda():
    assert resolve_precision("auto", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ConfigError, match="train.precision=fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)


@pytest.mark.parametrize("loss", [lambda a, b: nt_xent(a, b, 0.5), byol_loss, barlow_twins_loss])
def test_losses_run_in_float32_under_bf16_autocast(loss):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(2, 32, 16, generator=g).bfloat16().unbind(0)
    with autocast("bf16", CPU):
        value = loss(z1, z2)
    assert value.dtype == torch.float32
    assert torch.equal(value, loss(z1.float(), z2.float()))  # the float32 computation, bit for bit


def test_global_batchnorm_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 36, 5),
        torch.nn.BatchNorm1d(5, affine=False),
    )
    x = torch.randn(6, 3, 8, 8)
    keys = list(net.state_dict())
    expected = net(x)
    converted = convert_sync_batchnorm(net, CPU)
    assert isinstance(converted[1], GlobalBatchNorm) and isinstance(converted[4], GlobalBatchNorm)
    assert list(converted.state_dict()) == keys
    torch.testing.assert_close(converted(x), expected)


def test_bf16_contiguous_run_trains(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.max_steps=3", "train.precision=bf16", "train.channels_last=false")
    summary = pretrain(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert summary["steps"] == 3 and 0 <= summary["knn5_top1"] <= 1
