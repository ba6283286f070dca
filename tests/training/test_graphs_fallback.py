"""train.cuda_graphs on the CPU (training/graphs.py): what runs here of the graphed path. In the runs
torch.compile is replaced by a recorder that returns the module unchanged (inductor on this CPU takes
30 s or more per tiny method), so they check the wiring: the mode asked for, the one warning of a run
that cannot use graphs, the graphed model in the real step giving the plain step's results bitwise, a
graph torch skips named in one warning. One test compiles for real, a Linear + BatchNorm: mode
reduce-overhead in the graphed model against the default mode. tests/cuda/test_cuda_graphs.py replays
the graphs on a GPU."""

from __future__ import annotations

import copy
import logging
import warnings

import pytest
import torch
import torch._dynamo
from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

from conftest import TINY
from sparsehead import config
from sparsehead.training import graphs
from sparsehead.training.graphs import SKIP_LOGGERS, GraphedModel, why_no_graphs
from sparsehead.training.setup import setup
from sparsehead.training.step import train_step

RUN = TINY + ["data.subset=256", "train.max_steps=3", "train.threads=1", "train.checkpoint_every=0"]
GRAPHS = ["train.compile=true", "train.cuda_graphs=true"]


def test_why_a_run_cannot_replay_graphs():
    assert "cpu, not a CUDA GPU" in why_no_graphs(torch.device("cpu"), 1)
    assert "2 processes (DistributedDataParallel)" in why_no_graphs(torch.device("cuda", 0), 2)
    assert why_no_graphs(torch.device("cuda", 0), 1) is None


def train(tmp_path, name, overrides, monkeypatch, graphs_possible=False):
    """A tiny run: its final weights, the modes torch.compile was asked for, the warnings, the step calls
    that began a new graph-trees iteration, and the model the step called."""
    modes, marks = [], []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    if graphs_possible:  # as on a GPU: the graphed model in the step, on this CPU
        monkeypatch.setattr(graphs, "why_no_graphs", lambda device, world_size: None)
    cfg = config.load(None, RUN + overrides + [f"train.out_dir={tmp_path}"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with setup(cfg, tmp_path / name) as run:
            for images, labels in run.batches():
                train_step(run, images, labels)
            weights, model = {k: v.clone() for k, v in run.method.state_dict().items()}, run.model
    monkeypatch.undo()
    said = [str(w.message) for w in caught if "train.cuda_graphs" in str(w.message)]
    return weights, modes, said, len(marks), model


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return train(tmp_path_factory.mktemp("plain"), "plain", [], monkeypatch)[0]


def test_without_a_gpu_the_run_warns_once_and_trains_compiled(tmp_path, monkeypatch, plain):
    weights, modes, said, marks, model = train(tmp_path, "cpu", GRAPHS, monkeypatch)
    assert modes == [None] and marks == 0 and not isinstance(model, GraphedModel)  # compiled, default mode
    assert said == [
        "train.cuda_graphs: the run's device is cpu, not a CUDA GPU; the step runs compiled, without CUDA graphs"
    ]
    assert all(torch.equal(weights[k], plain[k]) for k in plain)


def test_the_graphed_model_in_the_step_trains_as_the_plain_step(tmp_path, monkeypatch, plain):
    handlers = {name: list(logging.getLogger(name).handlers) for name in SKIP_LOGGERS}
    weights, modes, said, marks, model = train(tmp_path, "graphed", GRAPHS, monkeypatch, graphs_possible=True)
    assert modes == ["reduce-overhead"] and isinstance(model, GraphedModel)
    assert marks == 3 and said == []  # a new iteration each step; nothing skipped
    for key in plain:
        assert torch.equal(weights[key], plain[key]), key
    # The run's teardown stopped the watch for skipped graphs.
    assert {name: logging.getLogger(name).handlers for name in SKIP_LOGGERS} == handlers


class SkipsAGraph(torch.nn.Module):
    """Stands in for a compiled model whose graph torch skips: inductor's own call counts and logs it."""

    def forward(self, x):
        log_cudagraph_skip_and_bump_counter(
            "skipping cudagraphs due to mutated inputs (1 instances). Found from : \n  File model.py, line 3"
        )
        return x * 2


def test_a_graph_torch_skips_is_named_in_one_warning(monkeypatch):
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    model = GraphedModel(SkipsAGraph())
    try:
        with pytest.warns(UserWarning) as caught:
            assert torch.equal(model(torch.ones(2)), torch.full((2,), 2.0))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            model(torch.ones(2))
    finally:
        model.close()
    assert [str(w.message) for w in caught] == [
        "train.cuda_graphs: torch.compile left part of the step without CUDA graphs (skipping cudagraphs due "
        "to mutated inputs (1 instances)); it runs compiled"
    ]
    assert model.skipped not in logging.getLogger(SKIP_LOGGERS[0]).handlers


def test_compiled_for_graphs_it_trains_on_the_cpu_as_compiled_without(monkeypatch):
    """The real torch.compile, mode reduce-overhead inside the graphed model (a new graph-trees iteration
    each step) against the default mode: bitwise the same training of a Linear + BatchNorm (its buffers
    mutated in the graph). On the CPU inductor leaves the graphs out and counts it, which the model names.
    About 15 s on a cold inductor cache here (2 cores), 1-5 s warm."""
    torch._dynamo.reset()
    base = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8))
    plain, graphed = copy.deepcopy(base), copy.deepcopy(base)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))

    def train(module, call):
        opt = torch.optim.SGD(module.parameters(), lr=0.1)
        for _ in range(3):
            loss = call(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    train(plain, torch.compile(plain))
    model = GraphedModel(torch.compile(graphed, mode=graphs.GRAPH_MODE))
    try:
        with pytest.warns(UserWarning, match="train.cuda_graphs: torch.compile left part of the step without CUDA"):
            train(graphed, model)
    finally:
        model.close()
        torch._dynamo.reset()
    for key, value in plain.state_dict().items():
        assert torch.equal(graphed.state_dict()[key], value), key
