"""The one DDP harness of the tests: run a function on two gloo CPU processes, collect what each
rank returns.

A test defines a top-level `fn(rank, *args) -> dict of tensors` (picklable, so the spawned
processes import it by name), calls `run_on_ranks(fn, *args)` and compares the ranks' results with
one process computing on the whole batch. `shard(t, rank)` is a rank's slice of a batch.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The processes come from multiprocessing's fork server, which imports these once: a spawned process
# would import torch and the package again each time (seconds, for a test of a fraction of one).
mp.set_forkserver_preload(["torch", "torch.distributed", "sparsehead.training.loop", "sparsehead.evaluate.runner"])


def _entry(rank: int, fn, port: int, out_dir: str, env: dict, args: tuple) -> None:
    os.environ.clear()  # the test's environment now, not the fork server's when it started
    os.environ.update(env)
    torch.set_num_threads(1)  # two processes on a 2-core machine
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.save(fn(rank, *args), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_on_ranks(fn, *args) -> list[dict]:
    """fn(rank, *args) on each of WORLD processes; their results, loaded safely, by rank."""
    with tempfile.TemporaryDirectory() as out:
        args = (fn, _free_port(), out, dict(os.environ), args)
        mp.start_processes(_entry, args=args, nprocs=WORLD, join=True, start_method="forkserver")
        return [torch.load(Path(out) / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def shard(t: torch.Tensor, rank: int) -> torch.Tensor:
    """This rank's contiguous slice of a batch, as DistributedSampler hands out equal parts."""
    n = t.shape[0] // WORLD
    return t[rank * n : (rank + 1) * n]


def torchrun_sparsehead(*args: str, flags: tuple[str, ...] = ()) -> list[str]:
    """The command `torchrun --standalone --nproc_per_node=2 FLAGS -m sparsehead ARGS` (WORLD gloo processes on
    the CPU), each worker a child of the tests' fork server (tests/forked_sparsehead.py stands in for it)."""
    from conftest import TESTS, cli_fork_server

    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", *flags]
    return [*launcher, str(TESTS / "forked_sparsehead.py"), cli_fork_server().path, *args]


def torchrun_workers(agent: subprocess.Popen) -> dict[int, int]:
    """torchrun's worker processes, by RANK, once both have started."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = {}
        for task in Path(f"/proc/{agent.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                rank = [e for e in env if e.startswith(b"RANK=")]
                if rank:
                    found[int(rank[0][5:])] = int(pid)
        if len(found) == 2:
            return found
        time.sleep(0.1)
    raise AssertionError("torchrun started no two workers")
