"""Per-step cost of the pre-emption flag's all-reduce (core/signals.py StopFlag) under DDP.

    PYTHONPATH=src python benchmarks/stop_flag_allreduce.py [--calls 2000] [--repeats 5] [--toy]

Every step of a DDP run, each rank all-reduces (MAX) one int32 "a stop signal arrived" flag so
that all ranks checkpoint at the same step. This spawns 2 gloo CPU processes (one thread each)
and times `calls` back-to-back calls, `repeats` times; it prints the median and best microseconds
per call, to set against a training step (tens to hundreds of milliseconds on a GPU).
`--toy`: 50 calls, 2 repeats (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from sparsehead.core.signals import StopFlag


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, calls: int, repeats: int, out: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        flag = StopFlag()
        for _ in range(10):  # warm-up
            flag.any_rank(None)
        per_call = []
        for _ in range(repeats):
            tdist.barrier()
            start = time.perf_counter()
            for _ in range(calls):
                flag.any_rank(None)
            per_call.append((time.perf_counter() - start) / calls * 1e6)
        if rank == 0:
            Path(out).write_text(" ".join(f"{t:.3f}" for t in per_call))
    finally:
        tdist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--toy", action="store_true", help="50 calls, 2 repeats")
    args = parser.parse_args()
    calls, repeats = (50, 2) if args.toy else (args.calls, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.txt")
        mp.spawn(_worker, args=(_free_port(), calls, repeats, out), nprocs=2, join=True)
        times = [float(t) for t in Path(out).read_text().split()]
    print(
        f"stop-flag all_reduce(MAX), 2 gloo processes, {calls} calls x {repeats}: "
        f"median {statistics.median(times):.1f} us/call, best {min(times):.1f} us/call"
    )


if __name__ == "__main__":
    main()
