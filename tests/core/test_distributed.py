"""DDP equals one process on the concatenated batch: every method's training step (loss, every
gradient, BatchNorm statistics) and every loss that gathers across processes (value and input
gradients), on two gloo CPU processes through the one harness, tests/ddp_harness.py.

Float64 makes the comparison tight: rtol 1e-7, atol 1e-10 (float32 would need ~1e-4). Each check
runs once, in one spawn for the whole module. Every registered method is checked (W-MSE
excepted); adding a loss to the check = adding it to LOSSES.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

from conftest import SRC, TINY, method_keys
from ddp_harness import WORLD, run_on_ranks, shard, torchrun_sparsehead
from sparsehead import config
from sparsehead.core.sync_batchnorm import convert_sync_batchnorm
from sparsehead.methods import METHODS
from sparsehead.methods.directpred import batch_correlation
from sparsehead.methods.losses import (
    barlow_twins_loss,
    directclr_loss,
    huang_infonce,
    moco_v3_loss,
    nt_xent,
    sinkhorn_knopp,
    swav_loss,
    vicreg_loss,
)
from sparsehead.runs.model import build_model

# Every registered method but W-MSE, left out by design: each process whitens its own sub-batches
# (losses.wmse_loss).
DDP_METHODS = [name for name in METHODS if name != "wmse"]
# A timm ViT backbone under the same check (SimCLR and BYOL on it), 4x4 patches of the 8 px views.
VIT = [
    "model.backbone=timm:vit_tiny_patch16_224",
    "data.image_size=8",
    "model.timm_args.patch_size=4",
    "model.timm_args.depth=1",
    "model.timm_args.embed_dim=16",
    "model.timm_args.num_heads=2",
]
DDP_CASES = DDP_METHODS + ["simclr+vit", "byol+vit"]
# Losses of two (B, D) inputs whose value and input gradients must not depend on the sharding.
LOSSES = {
    "nt_xent": lambda a, b: nt_xent(a, b, 0.5),
    "huang": lambda a, b: huang_infonce(a, b, 0.5, 0.7),
    "barlow_twins": barlow_twins_loss,
    "vicreg": vicreg_loss,
    "moco_v3": lambda a, b: moco_v3_loss(a, b, 0.2),  # keys b: no gradient
    "directclr": lambda a, b: directclr_loss(a, b, 0.1),
    "swav": lambda a, b: swav_loss(a, b, 0.1, 0.05, 3),  # a, b: prototype scores
}
BATCH, DIM = 16, 8  # global batch; each process gets BATCH // WORLD
RTOL, ATOL = 1e-7, 1e-10


def _method(case: str):
    name, _, backbone = case.partition("+")
    cfg = config.load(
        None,
        TINY
        + [
            f"method.name={name}",
            "head.hidden_dim=32",
            "head.out_dim=16",
            "sparsity.lam=0",
            *method_keys(name, "method.queue_size=256"),
            *(VIT if backbone == "vit" else []),
        ],
    )
    torch.manual_seed(0)
    return build_model(cfg).double()


def _inputs():
    g = torch.Generator().manual_seed(1)
    views = torch.rand(2, BATCH, 3, 8, 8, generator=g, dtype=torch.float64)
    # Columns of different scales: VICReg's variance hinge is active on some, not on others.
    z = torch.randn(2, BATCH, DIM, generator=g, dtype=torch.float64) * torch.linspace(
        0.3, 2.5, DIM, dtype=torch.float64
    )
    return views, z


def _step(model, method, x1, x2) -> dict:
    loss = model(x1, x2).loss
    loss.backward()
    return {
        "loss": loss.detach(),
        "grads": {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None},
        "buffers": {k: b.clone() for k, b in method.named_buffers()},
    }


def _loss_step(fn, z1, z2) -> dict:
    z1, z2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    loss = fn(z1, z2)
    g1, g2 = torch.autograd.grad(loss, (z1, z2), allow_unused=True)
    return {"loss": loss.detach(), "grad1": g1, "grad2": torch.zeros_like(z2) if g2 is None else g2}


def _on_rank(rank: int) -> dict:
    views, z = _inputs()
    results = {}
    for name in DDP_CASES:
        method = convert_sync_batchnorm(_method(name), torch.device("cpu"))
        results[name] = _step(DistributedDataParallel(method), method, shard(views[0], rank), shard(views[1], rank))
    z1, z2 = shard(z[0], rank), shard(z[1], rank)
    for name, fn in LOSSES.items():
        results[f"loss/{name}"] = _loss_step(fn, z1, z2)
    results["sinkhorn_codes"] = sinkhorn_knopp(z1, 0.05, 3)
    results["directpred_correlation"] = batch_correlation(z1, z2)
    return results


@pytest.fixture(scope="module")
def ranks():
    """Every check of this module run once under two processes; the per-rank results."""
    return run_on_ranks(_on_rank)


@pytest.mark.parametrize("name", DDP_CASES)
def test_ddp_step_equals_single_process_on_the_whole_batch(ranks, name):
    views, _ = _inputs()
    method = _method(name)
    single = _step(method, method, views[0], views[1])
    # Each rank's loss is the mean over its shard (or the global loss itself); their mean is the
    # loss DDP's gradient averaging optimises.
    ddp_loss = torch.stack([r[name]["loss"] for r in ranks]).mean()
    torch.testing.assert_close(ddp_loss, single["loss"], rtol=RTOL, atol=ATOL)
    for r in ranks:
        assert r[name]["grads"].keys() == single["grads"].keys()
        for key, grad in single["grads"].items():
            torch.testing.assert_close(r[name]["grads"][key], grad, rtol=RTOL, atol=ATOL, msg=key)
        for key, buf in single["buffers"].items():  # running BN statistics of the global batch
            torch.testing.assert_close(r[name]["buffers"][key], buf, rtol=RTOL, atol=ATOL, msg=key)


@pytest.mark.parametrize("name", list(LOSSES))
def test_gathered_loss_on_shards_equals_loss_on_the_concatenation(ranks, name):
    _, z = _inputs()
    single = _loss_step(LOSSES[name], z[0], z[1])
    torch.testing.assert_close(
        torch.stack([r[f"loss/{name}"]["loss"] for r in ranks]).mean(), single["loss"], rtol=RTOL, atol=ATOL
    )
    # A shard's gradient sums what every rank's loss sends back through the gather/all-reduce;
    # DDP divides it by the world size, which makes it the slice of the full gradient.
    for rank, r in enumerate(ranks):
        for key in ("grad1", "grad2"):
            torch.testing.assert_close(
                r[f"loss/{name}"][key] / WORLD, shard(single[key], rank), rtol=RTOL, atol=ATOL, msg=key
            )


def test_sinkhorn_codes_and_directpred_correlation_are_those_of_the_global_batch(ranks):
    _, z = _inputs()
    # SwAV's equal partition is over the global batch: the ranks' codes are slices of the full one.
    torch.testing.assert_close(
        torch.cat([r["sinkhorn_codes"] for r in ranks]), sinkhorn_knopp(z[0], 0.05, 3), rtol=RTOL, atol=ATOL
    )
    for r in ranks:  # every rank sets DirectPred's predictor from the same F
        torch.testing.assert_close(r["directpred_correlation"], batch_correlation(z[0], z[1]), rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_torchrun_pretrain_writes_one_run_folder(tmp_path):
    """`torchrun --nproc_per_node=2 -m sparsehead pretrain` on digits: one run folder, checkpoints
    written once (by rank 0), one metrics log, and the final k-NN ran."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = torchrun_sparsehead(
        "pretrain",
        "--run-dir",
        str(run_dir),
        *[o for o in TINY if not o.startswith(("train.log_every", "train.epochs"))],
        "train.max_steps=4",
        "train.checkpoint_every=2",
        "train.log_every=2",
        "data.subset=128",
        "train.epochs=2",
        "eval.knn_every=1",
    )  # 2 steps an epoch: k-NN monitor at 2
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt-00000002.pt", "ckpt-00000004.pt"]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 4 and 0.1 <= results["knn5_top1"] <= 1.0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in lines if "loss" in rec] == [2, 4]  # rank 0 alone writes
    assert [rec["step"] for rec in lines if "knn5_top1" in rec] == [2, 4]  # the monitor, the end
    # the collapse monitor's window gathered from both ranks: 2 steps of 64 images, then 4 (of 1,024)
    assert [rec["collapse/window"] for rec in lines if "loss" in rec] == [128, 256]
