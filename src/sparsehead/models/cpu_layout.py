"""Whether a backbone may run channels_last (NHWC) on this device.

oneDNN's AVX2 weight gradient of a channels_last 1x1 convolution of stride 2 or 4 corrupts the heap
when it has 2 to 7 input channels ("double free or corruption", or a segfault;
scripts/onednn_avx2_channels_last_repro.py, docs/performance.md). The guard takes every strided 1x1
convolution whose input channels are not a multiple of 8, the AVX2 vector of 8 floats: the same
kernel runs them on padded weights, and a heap corruption can be silent. That kernel runs on CPUs
with AVX2 but not AVX-512, or where ONEDNN_MAX_CPU_ISA holds oneDNN to AVX2; such a backbone runs in
the contiguous layout there, and the run says so.
"""

from __future__ import annotations

import os
import platform

import torch
import torch.nn as nn

AVX2_FLOATS = 8  # the channel block of oneDNN's AVX2 kernels


def onednn_runs_avx2_kernels() -> bool:
    """oneDNN's x86 convolutions are its AVX2 ones in this process (below AVX2, SSE41 and AVX run a
    GEMM that was clean in the same case)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False  # other architectures run other kernels
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    if limit in ("SSE41", "AVX"):
        return False
    if limit.startswith("AVX2"):  # AVX2, AVX2_VNNI, AVX2_VNNI_2
        return torch.cpu._is_avx2_supported()
    return torch.cpu._is_avx2_supported() and not torch.cpu._is_avx512_supported()


def unsafe_avx2_convolutions(model: nn.Module) -> list[str]:
    """The convolutions whose channels_last weight gradient corrupts memory under oneDNN's AVX2 kernels."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
        and m.kernel_size == (1, 1)
        and m.stride != (1, 1)
        and m.in_channels // m.groups % AVX2_FLOATS
    ]


def contiguous_note(what: str, unsafe: list[str]) -> str:
    return (
        f"train.channels_last: {what} runs in the contiguous layout on this CPU: oneDNN's AVX2 "
        f"channels_last kernel corrupts memory on its strided 1x1 convolutions whose input channels "
        f"are not a multiple of 8 ({', '.join(unsafe)}); a model.width that is a multiple of 8 keeps "
        "channels_last (docs/performance.md)"
    )
