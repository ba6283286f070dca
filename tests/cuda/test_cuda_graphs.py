"""train.cuda_graphs on a GPU: the compiled step's forward and backward replay as CUDA graphs (fewer
kernel launches than the compiled step without them), a replayed step makes no host sync, the results
equal the compiled run's without graphs bitwise, and a batch of another size is compiled and recorded
anew, not a crash.

Skipped without a GPU (tests/conftest.py); scripts/gpu_check.sh runs it on one. Three compilations of
a tiny SimCLR (without graphs, with them, and the other batch size)."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch
import torch._dynamo

from conftest import TINY
from sparsehead import config
from sparsehead.data.crops import WholeImages
from sparsehead.training.graphs import GraphedModel
from sparsehead.training.setup import setup
from sparsehead.training.step import train_step

pytestmark = pytest.mark.cuda
RUN = TINY + [
    "train.device=cuda",
    "train.precision=fp32",
    "train.compile=true",
    "optim.name=adamw",
    "data.subset=512",
    "train.max_steps=6",
    "train.checkpoint_every=0",
]
WARMUP = 3  # graph trees run a function once, then record it, then replay: step 3 replays
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx")


def launches(step) -> Counter:
    """The CUDA runtime's kernel and graph launches of `step()`."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        step()
        torch.cuda.synchronize()
    names = Counter(event.name for event in prof.events())
    return Counter(kernels=sum(names[n] for n in LAUNCHES), graphs=names["cudaGraphLaunch"])


def no_sync(step):
    torch.cuda.set_sync_debug_mode("error")  # a synchronising call raises
    try:
        return step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def steps(tmp_path, graphs: bool) -> dict:
    """Six steps of a tiny compiled run: the losses, the weights, the launches of step 4, what the run
    warned of; with graphs, then a step of half a batch and a full one again."""
    torch._dynamo.reset()
    cfg = config.load(None, RUN + [f"train.cuda_graphs={str(graphs).lower()}", f"train.out_dir={tmp_path}"])
    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with setup(cfg, tmp_path / f"graphs-{graphs}") as run:
            assert isinstance(run.model, GraphedModel) == graphs
            for images, labels in run.batches():

                def step():
                    # A graph's outputs are overwritten by its next replay: what is kept is copied.
                    losses.append(train_step(run, images, labels).loss.clone())

                if run.state.step < WARMUP:
                    step()
                elif run.state.step == WARMUP:
                    counts = launches(step)
                else:
                    no_sync(step)
            weights = {k: v.clone() for k, v in run.method.state_dict().items()}
            said = [str(w.message) for w in caught if "train.cuda_graphs" in str(w.message)]
            if graphs:  # another batch size: compiled and recorded anew (or left un-graphed, with a warning)
                half = train_step(run, WholeImages(images.images[:32]), labels[:32]).loss.clone()
                full = train_step(run, images, labels).loss.clone()
                assert half.isfinite() and full.isfinite()
    torch._dynamo.reset()
    return {"losses": torch.stack(losses).cpu(), "weights": weights, "launches": counts, "said": said}


def test_the_graphed_step_replays_without_sync_and_equals_the_compiled_step(tmp_path, monkeypatch):
    # Bitwise needs run-to-run deterministic kernels (cuDNN's default backward may use atomics).
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    plain, graphed = steps(tmp_path, graphs=False), steps(tmp_path, graphs=True)
    assert graphed["said"] == [], graphed["said"]  # no graph skipped
    assert plain["launches"]["graphs"] == 0 and graphed["launches"]["graphs"] >= 2, graphed["launches"]  # fwd, bwd
    assert graphed["launches"]["kernels"] < plain["launches"]["kernels"], (graphed["launches"], plain["launches"])
    diff = (graphed["losses"] - plain["losses"]).abs().max().item()
    # Unequal but close would mean the two compilations chose other reduction configurations.
    assert torch.equal(graphed["losses"], plain["losses"]), f"losses differ, by up to {diff}"
    for key, value in plain["weights"].items():
        assert torch.equal(graphed["weights"][key], value), key
