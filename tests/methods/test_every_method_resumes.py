"""Every registered method resumes exactly: all of its state (EMA targets, queues, predictor statistics)
lives in the checkpoint, so a run stopped halfway and resumed ends bitwise equal to an unbroken one.
Beside test_every_method_trains.py (which holds the settings), a module of its own so that
pytest-xdist (`--dist loadscope`) runs the two on both workers; `numerics`, as there."""

from __future__ import annotations

import pytest
import torch
from test_every_method_trains import RESUME, VARIANTS, keep_torch_threads, method_run  # noqa: F401 (a fixture)

from sparsehead.runs import checkpoint
from sparsehead.training.loop import pretrain


@pytest.mark.numerics
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_method_resumes_exactly(variant, tmp_path):
    full = pretrain(method_run(variant, tmp_path, *RESUME), tmp_path / "full")
    assert full["steps"] == 8
    # Stop after 5 steps, resume to the end: the same final state as the unbroken run, bitwise.
    half = tmp_path / "half"
    pretrain(method_run(variant, tmp_path, *RESUME, "train.max_steps=5"), half)
    pretrain(method_run(variant, tmp_path, *RESUME), half)
    a, b = (checkpoint.load(checkpoint.find(d)) for d in (tmp_path / "full", half))
    assert a["step"] == b["step"] == 8
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"{variant}: {key} differs after resume"
