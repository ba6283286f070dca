"""The channels_last guard: where oneDNN runs its AVX2 kernels, a backbone with a strided 1x1
convolution of a channel count that is not a multiple of 8 trains in the contiguous layout (its
channels_last weight gradient corrupts the heap: scripts/onednn_avx2_channels_last_repro.py)."""

import platform

import pytest
import torch

from conftest import TINY, run_cli
from sparsehead.config import ModelConfig
from sparsehead.models import cpu_layout
from sparsehead.models.backbones import build_backbone, use_channels_last

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "width, unsafe",
    [
        (4, ["layer2.0.downsample.0"]),  # layer 3's shortcut reads 8 channels, layer 4's 16
        (6, ["layer2.0.downsample.0", "layer3.0.downsample.0"]),  # 6 and 12 input channels
        (8, []),
        (16, []),
    ],
)
def test_unsafe_convolutions_are_the_strided_1x1_ones_off_the_8_channel_block(width, unsafe):
    net = build_backbone(ModelConfig(backbone="resnet18", width=width, stem="cifar"), 16)
    assert cpu_layout.unsafe_avx2_convolutions(net) == unsafe


@pytest.mark.parametrize(
    "isa, avx2", [("AVX2", True), ("avx2_vnni", True), ("SSE41", False), ("AVX", False), ("AVX512_CORE", False)]
)
def test_the_onednn_isa_limit_is_read_from_the_environment(monkeypatch, isa, avx2):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    monkeypatch.setattr(cpu_layout.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu_layout.torch.cpu, "_is_avx2_supported", lambda: True)
    monkeypatch.setattr(cpu_layout.torch.cpu, "_is_avx512_supported", lambda: True)
    assert cpu_layout.onednn_runs_avx2_kernels() is avx2


def test_a_cpu_with_avx2_but_not_avx512_runs_them_and_other_architectures_do_not(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(cpu_layout.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu_layout.torch.cpu, "_is_avx2_supported", lambda: True)
    monkeypatch.setattr(cpu_layout.torch.cpu, "_is_avx512_supported", lambda: False)
    assert cpu_layout.onednn_runs_avx2_kernels()
    monkeypatch.setattr(cpu_layout.platform, "machine", lambda: "aarch64")
    assert not cpu_layout.onednn_runs_avx2_kernels()


def test_the_decision_per_device_and_width(monkeypatch, capsys):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(cpu_layout.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu_layout.torch.cpu, "_is_avx2_supported", lambda: True)
    narrow, wide = (ModelConfig(backbone="resnet18", width=w, stem="cifar") for w in (4, 8))
    assert use_channels_last(wide, 16, CPU) and not capsys.readouterr().err
    assert use_channels_last(narrow, 16, torch.device("cuda"))  # cuDNN's kernels, not oneDNN's
    assert not use_channels_last(narrow, 16, CPU)
    assert "contiguous layout on this CPU" in capsys.readouterr().err
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    monkeypatch.setattr(cpu_layout.torch.cpu, "_is_avx512_supported", lambda: True)
    assert use_channels_last(narrow, 16, CPU)  # the AVX-512 kernels run it safely


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or not torch.cpu._is_avx2_supported(),
    reason="oneDNN's AVX2 kernels need an x86-64 CPU with AVX2",
)
def test_width_4_trains_under_onednn_avx2_through_the_guard(tmp_path):
    """Without the guard this run aborts ("double free or corruption") or segfaults in its first
    steps: the width-4 shortcut of layer 2 is a 1x1 stride-2 convolution of 4 input channels."""
    args = [*TINY, "model.width=4", "train.batch_size=16", "train.max_steps=6", "train.channels_last=true"]
    proc = run_cli(
        "pretrain",
        *args,
        "--run-dir",
        str(tmp_path / "run"),
        env={"ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "layer2.0.downsample.0" in proc.stderr and "contiguous layout" in proc.stderr
