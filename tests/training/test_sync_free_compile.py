"""train.compile compiles the method as the step calls it, loss included (issue 36): its forward traces
into one graph, with no graph break, for SimCLR, Barlow Twins (global_moments once broke it) and BYOL.
Traced only (torch._dynamo.explain, no inductor): a compiled tiny run on this CPU spends 32-38 s
compiling, too slow for the suite; tests/cuda/test_cuda.py runs a compiled step on a GPU."""

from __future__ import annotations

import pytest
import torch._dynamo

from conftest import TINY
from sparsehead import config
from sparsehead.runs.model import build_model


@pytest.mark.parametrize("name", ["simclr", "barlow_twins", "byol"])
def test_the_method_and_its_loss_trace_into_one_graph(name):
    torch._dynamo.reset()
    method = build_model(config.load(None, TINY + [f"method.name={name}"]))
    x1, x2 = torch.randn(2, 8, 3, 16, 16, generator=torch.Generator().manual_seed(0)).unbind()
    explained = torch._dynamo.explain(method)(x1, x2)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    torch._dynamo.reset()
