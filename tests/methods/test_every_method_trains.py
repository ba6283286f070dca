"""Every registered method, end to end on digits: it trains without NaN and it learns (its loss on
fixed views falls by a margin); test_every_method_resumes.py: it resumes bitwise.

Both properties depend on a trajectory of float operations, so they are marked `numerics`:
`make test` runs them again under other CPU kernels (AVX2 / plain) than the machine's best."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import TINY, assert_loss_fell, fixed_view_losses, method_keys
from sparsehead import config
from sparsehead.methods import METHODS
from sparsehead.runs import checkpoint
from sparsehead.runs.metrics_log import read_metrics
from sparsehead.training.loop import pretrain

# Learning: 32 steps over the whole of digits at its own 8x8 resolution (22 steps an epoch), Adam at
# 1e-2, a checkpoint every 2 steps. The loss on fixed views after the first checkpoint is compared
# with the one at the end: from step 2 on, MoCo v2's queue (one step's keys) holds real keys, not
# the random unit vectors it starts with, which are easy negatives and would make its loss rise as
# they leave.
LEARN = ["data.image_size=8", "optim.lr=0.01"]
LEARN_STEPS, EARLY = 32, 2
# The margin: every method must lower that loss by at least 0.75% of its level. A method that does
# not learn (a lost gradient, a wrong sign) moves it by about 0. Measured (this setting, seeds 0-2,
# on a 2-core AMD EPYC, AVX-512 and AVX2 kernels; a seed changes the trajectory as much as a
# kernel's rounding does): the slowest, VICReg, falls by 1.47-2.34%, SimCLR 1.78-2.20%, MoCo v3
# 2.89-3.45%, W-MSE 3.1-38.6%, Barlow Twins over 30%: about twice the margin or more.
MIN_FALL = 0.0075
# Resume: 4 steps an epoch (256 images), stopped after 5 and resumed to 8, across an epoch boundary.
RESUME = ["data.image_size=8", "data.subset=256", "train.max_steps=8"]

SETTINGS = {
    "moco_v2": ["method.queue_size=64"],  # the smallest queue: one step's keys
    "directclr": ["sparsity.lam=0"],  # no projection head: SparseHead has nothing to penalise
    # W-MSE whitens sub-batches of min(w_size, batch) = 64 samples. With the 32-d embedding of the
    # other methods (2 samples a dimension) the whitened positives are mostly estimation noise: the
    # logged loss barely moves in 150 steps (measured 1.975 -> 1.94), which is why the old 24-step
    # test flipped with the CPU's kernels. Measured in this test's setting, seeds 0-2: at 16-d the
    # loss on fixed views falls 1.2-4.7%, at 8-d (8 samples a dimension) 3.1-38.6%. The paper's CIFAR
    # setting: 128 samples for 64 dimensions, with far larger batches and 1,000 epochs.
    "wmse": ["head.out_dim=8"],
}
# Every method, and SimCLR with Huang et al.'s revised InfoNCE (the paper's tau 0.2).
VARIANTS = {name: SETTINGS.get(name, []) for name in sorted(METHODS)}
VARIANTS["simclr-huang"] = ["method.loss=huang", "method.temperature=0.2"]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def method_run(variant: str, out, *extra: str) -> config.Config:
    name = variant.split("-")[0]
    return config.load(
        None,
        TINY
        + [
            f"method.name={name}",
            "train.epochs=2",
            "train.threads=1",
            *method_keys(name, "method.predictor_hidden_dim=32"),
            "sparsity.lam=1e-4",
            f"train.out_dir={out}",
            *VARIANTS[variant],
            *extra,
        ],
    )


@pytest.mark.numerics
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_method_learns(variant, tmp_path):
    cfg = method_run(
        variant,
        tmp_path,
        *LEARN,
        f"train.max_steps={LEARN_STEPS}",
        f"train.checkpoint_every={EARLY}",
        f"train.keep_checkpoints={LEARN_STEPS // EARLY}",
    )
    run = pretrain(cfg, tmp_path / "run")["run_dir"]
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert len(losses) == LEARN_STEPS and all(math.isfinite(v) for v in losses), losses
    paths = checkpoint.list_checkpoints(run)
    assert [checkpoint.load(p)["step"] for p in (paths[0], paths[-1])] == [EARLY, LEARN_STEPS]
    early, last = (checkpoint.load(p)["model"] for p in (paths[0], paths[-1]))
    assert_loss_fell(fixed_view_losses(cfg, early), fixed_view_losses(cfg, last), variant, MIN_FALL)
