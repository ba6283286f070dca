"""DDP equals one process on the concatenated batch: losses, gradients, BatchNorm statistics.

Two CPU processes (gloo, a free localhost port) each take half of a float64 batch. The model runs
under DistributedDataParallel with BatchNorm made global (model.sync_batchnorm), so after DDP
averages the gradients they must equal those of a single process on the whole batch. Float64
makes the comparison tight: rtol 1e-7, atol 1e-10 (float32 would need ~1e-4).

Every registered method is checked (DDP_METHODS, from the registry), W-MSE excepted.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from conftest import SRC, TINY, method_keys
from sparsehead import config
from sparsehead.losses import barlow_twins_loss, nt_xent
from sparsehead.methods import METHODS
from sparsehead.runs import build_model
from sparsehead.sync_batchnorm import convert_sync_batchnorm

# W-MSE is left out by design: each process whitens its own sub-batches (losses.wmse_loss).
DDP_METHODS = [name for name in METHODS if name != "wmse"]  # every registered method but W-MSE
LOSSES = {"nt_xent": partial(nt_xent, temperature=0.5), "barlow_twins_loss": barlow_twins_loss}
WORLD, BATCH = 2, 16  # global batch; each process gets BATCH // WORLD
RTOL, ATOL = 1e-7, 1e-10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _method(name: str):
    cfg = config.load(None, TINY + [f"method.name={name}", "head.hidden_dim=32", "head.out_dim=16",
                                    "sparsity.lam=0", *method_keys(name, "method.queue_size=256")])
    torch.manual_seed(0)
    return build_model(cfg).double()


def _inputs():
    g = torch.Generator().manual_seed(1)
    views = torch.rand(2, BATCH, 3, 8, 8, generator=g, dtype=torch.float64)
    z = torch.randn(2, BATCH, 8, generator=g, dtype=torch.float64)
    return views, z


def _step(model, method, x1, x2) -> dict:
    loss = model(x1, x2).loss
    loss.backward()
    return {"loss": loss.detach(),
            "grads": {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None},
            "buffers": {k: b.clone() for k, b in method.named_buffers()}}


def _loss_step(fn, z1, z2) -> dict:
    z1, z2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    loss = fn(z1, z2)
    loss.backward()
    return {"loss": loss.detach(), "grad1": z1.grad, "grad2": z2.grad}


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        views, z = _inputs()
        shard = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        results = {}
        for name in DDP_METHODS:
            method = convert_sync_batchnorm(_method(name), torch.device("cpu"))
            results[name] = _step(DistributedDataParallel(method), method, views[0, shard], views[1, shard])
        for name, fn in LOSSES.items():
            results[name] = _loss_step(fn, z[0, shard], z[1, shard])
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """Every method and loss of this file run once under two processes; per-rank results."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("name", DDP_METHODS)
def test_ddp_step_equals_single_process_on_the_whole_batch(ddp_results, name):
    views, _ = _inputs()
    method = _method(name)
    single = _step(method, method, views[0], views[1])
    # Each rank's loss is the mean over its shard (or the global loss itself); their mean is the
    # loss DDP's gradient averaging optimises.
    ddp_loss = torch.stack([r[name]["loss"] for r in ddp_results]).mean()
    torch.testing.assert_close(ddp_loss, single["loss"], rtol=RTOL, atol=ATOL)
    for r in ddp_results:
        assert r[name]["grads"].keys() == single["grads"].keys()
        for key, grad in single["grads"].items():
            torch.testing.assert_close(r[name]["grads"][key], grad, rtol=RTOL, atol=ATOL, msg=key)
        for key, buf in single["buffers"].items():  # running BN statistics of the global batch
            torch.testing.assert_close(r[name]["buffers"][key], buf, rtol=RTOL, atol=ATOL, msg=key)


@pytest.mark.parametrize("name", list(LOSSES))
def test_gathered_loss_on_shards_equals_loss_on_the_concatenation(ddp_results, name):
    _, z = _inputs()
    single = _loss_step(LOSSES[name], z[0], z[1])
    torch.testing.assert_close(torch.stack([r[name]["loss"] for r in ddp_results]).mean(), single["loss"],
                               rtol=RTOL, atol=ATOL)
    # A shard's gradient sums what every rank's loss sends back through the gather/all-reduce;
    # DDP divides it by the world size, which makes it the slice of the full gradient.
    n = BATCH // WORLD
    for rank, r in enumerate(ddp_results):
        rows = slice(rank * n, (rank + 1) * n)
        torch.testing.assert_close(r[name]["grad1"] / WORLD, single["grad1"][rows], rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(r[name]["grad2"] / WORLD, single["grad2"][rows], rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_torchrun_pretrain_writes_one_run_folder(tmp_path):
    """`torchrun --nproc_per_node=2 -m sparsehead pretrain` on digits: one run folder, checkpoints
    written once (by rank 0), one metrics log, and the final k-NN ran."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sparsehead", "pretrain", "--run-dir", str(run_dir),
           *[o for o in TINY if not o.startswith(("train.log_every", "train.epochs"))], "train.max_steps=4",
           "train.checkpoint_every=2", "train.log_every=2",
           "data.subset=128", "train.epochs=2", "eval.knn_every=1"]  # 2 steps an epoch: k-NN monitor at 2
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt-00000002.pt", "ckpt-00000004.pt"]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 4 and 0.1 <= results["knn5_top1"] <= 1.0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in lines if "loss" in rec] == [2, 4]  # rank 0 alone writes
    assert [rec["step"] for rec in lines if "knn5_top1" in rec] == [2, 4]  # the monitor, the end
