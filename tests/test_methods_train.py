"""Every registered method, end to end on digits: it trains without NaN, its loss falls, and all
of its state (EMA targets, queues, predictor statistics) lives in the checkpoint, so a run
stopped halfway and resumed ends bitwise equal to an unbroken one."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import TINY, method_keys
from sparsehead import checkpoint, config
from sparsehead.methods import METHODS
from sparsehead.metrics_log import read_metrics
from sparsehead.train import pretrain

STEPS = 24  # 1437 // 64 = 22 steps per epoch: the run crosses an epoch boundary

# MoCo v2 compares each query with a queue of earlier keys that starts as random unit vectors:
# those are easy negatives, so its loss jumps up as real keys replace them. The tiny run uses the
# smallest queue (one step's keys) so it holds real keys from step 2 on, and its first loss window
# starts after that step: a fall is then learning, not the queue filling up.
TINY_SETTINGS = {"moco_v2": ["method.queue_size=64"],
                 "directclr": ["sparsity.lam=0"]}  # no projection head: SparseHead has nothing to penalise
QUEUE_FILL_STEPS = {"moco_v2": 1}


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def method_run(name: str, out, *extra: str) -> config.Config:
    return config.load(None, TINY + [f"method.name={name}", "train.epochs=2", "train.threads=1",
                                     *method_keys(name, "method.predictor_hidden_dim=32"), "sparsity.lam=1e-4",
                                     f"train.out_dir={out}", *TINY_SETTINGS.get(name, []), *extra])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_trains_and_resumes_exactly(name, tmp_path):
    full = pretrain(method_run(name, tmp_path, f"train.max_steps={STEPS}"), tmp_path / "full")
    losses = [r["loss"] for r in read_metrics(full["run_dir"]) if "loss" in r]
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses), losses
    start = QUEUE_FILL_STEPS.get(name, 0)
    first, last = sum(losses[start:start + 4]) / 4, sum(losses[-4:]) / 4
    assert last < first, f"{name}: loss did not fall over {STEPS} steps: {first:.4f} -> {last:.4f}"

    # Stop at half, resume to the end: the same final state as the unbroken run, bitwise.
    half = tmp_path / "half"
    pretrain(method_run(name, tmp_path, f"train.max_steps={STEPS // 2}"), half)
    pretrain(method_run(name, tmp_path, f"train.max_steps={STEPS}"), half)
    a, b = (checkpoint.load(checkpoint.find(d)) for d in (tmp_path / "full", half))
    assert a["step"] == b["step"] == STEPS
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"{name}: {key} differs after resume"
