"""A training step timed per region (views, forward, backward, optimiser): what `--regions` reports.

Per region: its host time (perf_counter; on a GPU the host's issue time, the Python and dispatch cost
of launching its kernels, which the GPU may hide), its GPU time (CUDA events around it; CUDA only),
the aten ops it dispatches (one step counted by a TorchDispatchMode: each is one kernel launch or
more on a GPU; torch.compile'd code runs eagerly under such a mode, so a compiled region counts the
ops it replaces: its kernels are the CUDA count) and on CUDA the kernels it launches (torch.profiler's
launch calls inside the region's host interval, backward's engine thread included). Beside them the
GEMM ceiling measured in the same call: a bf16 matmul's TFLOP/s on CUDA, a float32 one's on the CPU.
Not a benchmark itself.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REGIONS = ("views", "forward", "backward", "optimiser")


@dataclass
class StepParts:
    """One training step cut into its regions: views(i) makes batch i's views, loss(views) runs the
    forward pass to the loss, then zero_grad + backward, then optimizer.step()."""

    views: Callable[[int], Any]
    loss: Callable[[Any], torch.Tensor]
    optimizer: torch.optim.Optimizer


def _run(parts: StepParts, i: int, enter: Callable[[str | None], None]) -> None:
    enter("views")
    views = parts.views(i)
    enter("forward")
    loss = parts.loss(views)
    enter("backward")
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    enter("optimiser")
    parts.optimizer.step()
    enter(None)


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.region, self.ops = None, Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[self.region] += 1
        return func(*args, **(kwargs or {}))


def _count_ops(parts: StepParts, i: int) -> Counter:
    counter = _OpCounter()
    with counter:
        _run(parts, i, lambda region: setattr(counter, "region", region))
    return counter.ops


def _count_kernels(parts: StepParts, i: int) -> dict:
    """Kernel launches per region of one step on CUDA: the launch calls inside each region's
    record_function interval (backward's engine thread launches while the main thread waits in it)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    opened = []

    def enter(region):
        if opened:
            opened.pop().__exit__(None, None, None)
        if region is not None:
            opened.append(record_function(f"region:{region}"))
            opened[-1].__enter__()

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _run(parts, i, enter)
        torch.cuda.synchronize()
    events = prof.events()
    spans = {e.name.removeprefix("region:"): e.time_range for e in events if e.name.startswith("region:")}
    launches = [e.time_range.start for e in events if "LaunchKernel" in e.name or e.name == "cudaGraphLaunch"]
    return {r: sum(span.start <= t < span.end for t in launches) for r, span in spans.items()}


def gemm_ceiling(device: torch.device, n: int) -> dict:
    """The best matmul rate of an n x n product: bf16 on CUDA (TFLOP/s), float32 on the CPU."""
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for rep in range(13):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            a @ b
            seconds = time.perf_counter() - t0
        if rep >= 3:  # warm-up
            times.append(seconds)
    return {"dtype": str(dtype).removeprefix("torch."), "size": n, "tflops": 2 * n**3 / min(times) / 1e12}


def region_report(parts: StepParts, device: torch.device, steps: int, warmup: int, gemm_size: int) -> dict:
    """Median host (and GPU) milliseconds per region over `steps` steps after `warmup`, ops (and kernels)
    per region of one more step, and the GEMM ceiling."""
    cuda = device.type == "cuda"
    host, gpu = {r: [] for r in REGIONS}, {r: [] for r in REGIONS}
    for i in range(warmup + steps):
        marks = []

        def enter(region):
            event = None
            if cuda:
                event = torch.cuda.Event(enable_timing=True)
                event.record()
            marks.append((region, time.perf_counter(), event))

        _run(parts, i, enter)
        if cuda:
            torch.cuda.synchronize()
        if i < warmup:
            continue
        for (region, t0, e0), (_, t1, e1) in zip(marks, marks[1:]):
            host[region].append((t1 - t0) * 1e3)
            if cuda:
                gpu[region].append(e0.elapsed_time(e1))
    ops = _count_ops(parts, warmup + steps)
    kernels = _count_kernels(parts, warmup + steps + 1) if cuda else {}
    regions = {}
    for r in REGIONS:
        regions[r] = {"host_ms": statistics.median(host[r]), "ops": ops[r]}
        if cuda:
            regions[r].update(gpu_ms=statistics.median(gpu[r]), kernels=kernels.get(r))
    return {"regions": regions, "gemm_ceiling": gemm_ceiling(device, gemm_size)}


def print_regions(title: str, report: dict) -> None:
    regions, gemm = report["regions"], report["gemm_ceiling"]
    cuda = "gpu_ms" in regions["views"]
    print(f"{title}: per region, median of the timed steps (ops: aten ops dispatched in one step)")
    print(f"  {'region':<10} {'host ms':>9}" + (f" {'GPU ms':>9} {'kernels':>8}" if cuda else "") + f" {'ops':>7}")
    for r, v in regions.items():
        gpu = f" {v['gpu_ms']:9.2f} {v['kernels'] if v['kernels'] is not None else '-':>8}" if cuda else ""
        print(f"  {r:<10} {v['host_ms']:9.2f}{gpu} {v['ops']:7d}")
    print(f"  GEMM ceiling: {gemm['dtype']} {gemm['size']}^3 matmul, {gemm['tflops'] * 1e3:.1f} GFLOP/s")
