"""The device of a process: `auto`, and under torchrun one GPU per process of a node (LOCAL_RANK)."""

from __future__ import annotations

import pytest
import torch

from sparsehead import config
from sparsehead.runs.model import resolve_device


@pytest.fixture
def four_gpus(monkeypatch):
    """A node with 4 GPUs, as torch.cuda reports it; records the current-device calls."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    return current


@pytest.mark.parametrize("name", ["auto", "cuda"], ids=["auto", "device-without-index"])
def test_each_torchrun_process_gets_its_own_gpu(four_gpus, monkeypatch, name):
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device(name) == torch.device("cuda", 2)
    assert four_gpus == [torch.device("cuda", 2)]


def test_one_process_uses_the_first_gpu_and_an_index_given_is_kept(four_gpus, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:3") == torch.device("cuda", 3)


def test_more_processes_than_gpus_is_a_clear_error(four_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "4")
    with pytest.raises(config.ConfigError, match="the node has 4 GPU"):
        resolve_device("auto")


def test_cpu_stays_cpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cpu") == torch.device("cpu")
