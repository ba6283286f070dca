"""CUDA graphs for the training step (train.cuda_graphs): the compiled method's forward and backward,
loss included, replayed as CUDA graphs by torch.compile's mode "reduce-overhead" (CUDA Graph Trees),
where the run allows them; elsewhere the run goes on compiled without them and warns once, saying why.

Why these graphs and not one capture of the whole train_step: a replayed graph repeats the kernels,
arguments and addresses it recorded. The step's Python values (the step number, the learning rate
the schedule sets as a float, the EMA momentum and prune schedules) would be frozen at their
recorded values, and a hook that rebinds a tensor (the non-finite guard's counts) would be read
stale, silently; torch.compile's graph trees take only what it traced (fixed shapes, the weights and
BatchNorm buffers at fixed addresses, inputs copied in), and check that, or skip the graph and log
why. The views, the hooks and the fused optimiser update stay eager around the graphs.
"""

from __future__ import annotations

import logging
import warnings
from typing import Optional

import torch
import torch.nn as nn
from torch._dynamo.utils import counters

from sparsehead.config import TrainConfig
from sparsehead.core import distributed as dist

GRAPH_MODE = "reduce-overhead"  # torch.compile's mode that records and replays CUDA graphs
SKIP_MESSAGE = "skipping cudagraphs"  # how inductor's log line of a graph left un-graphed begins
# Where torch logs those lines: its "cudagraphs" log (torch 2.14), or in older versions its "perf_hints"
# log, which is off unless TORCH_LOGS names it and so reaches no handler of the parent loggers.
SKIP_LOGGERS = ("torch._inductor.cudagraph_utils.__cudagraphs", "torch._inductor.cudagraph_utils.__perf_hints")


def why_no_graphs(device: torch.device, world_size: int) -> Optional[str]:
    """Why this run cannot replay CUDA graphs (None: it can)."""
    if device.type != "cuda":
        return f"the run's device is {device.type}, not a CUDA GPU"
    if world_size > 1:
        # DDP splits the compiled graph at its gradient buckets, and there inductor skips the graphs of
        # BatchNorm's buffer updates (pytorch/pytorch#139207, open).
        return f"a run of {world_size} processes (DistributedDataParallel)"
    return None


def warn_no_graphs(why: str) -> None:
    """The one line that says why (part of) the step runs without CUDA graphs, from the main process."""
    if dist.is_main():
        warnings.warn(f"train.cuda_graphs: {why}", stacklevel=2)


def compile_model(model: nn.Module, train: TrainConfig, device: torch.device) -> nn.Module:
    """The module the step calls: `model` as train.compile and train.cuda_graphs ask."""
    if not train.compile:
        return model
    if train.cuda_graphs and (reason := why_no_graphs(device, dist.world_size())) is None:
        return GraphedModel(torch.compile(model, mode=GRAPH_MODE))
    if train.cuda_graphs:
        warn_no_graphs(f"{reason}; the step runs compiled, without CUDA graphs")
    return torch.compile(model)


class SkippedGraphs(logging.Handler):
    """Each "skipping cudagraphs due to ..." record torch logs while attached, its first line."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(SKIP_MESSAGE):
            self.reasons.append(message.split(". Found from")[0].splitlines()[0])  # without its stack trace


class GraphedModel(nn.Module):
    """The model compiled with mode reduce-overhead, as the step calls it. Each call begins a new
    iteration of the graph trees, so the outputs of the last step's graphs may be overwritten (the
    step reads them, and the hooks copy what they keep, before the next forward); and watches for a
    graph torch leaves un-graphed (a mutated input that is not a weight or buffer, an op CUDA graphs
    cannot hold), warning once with torch's reason. close() stops watching (the run's teardown)."""

    def __init__(self, compiled: nn.Module):
        super().__init__()
        self.compiled = compiled
        self.skipped = SkippedGraphs()
        self.loggers = [logging.getLogger(name) for name in SKIP_LOGGERS]
        for logger in self.loggers:
            logger.addHandler(self.skipped)
        self.skips_before = counters["inductor"]["cudagraph_skips"]  # torch counts each graph it skips
        self.warned = False

    def forward(self, *views: torch.Tensor):
        torch.compiler.cudagraph_mark_step_begin()
        out = self.compiled(*views)
        if not self.warned and counters["inductor"]["cudagraph_skips"] > self.skips_before:
            self.warned = True  # a backward's skip is seen at the next step's forward
            reasons = "; ".join(dict.fromkeys(self.skipped.reasons)) or "see TORCH_LOGS=cudagraphs,perf_hints"
            warn_no_graphs(f"torch.compile left part of the step without CUDA graphs ({reasons}); it runs compiled")
        return out

    def close(self) -> None:
        for logger in self.loggers:
            logger.removeHandler(self.skipped)
