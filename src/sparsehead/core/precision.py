"""Numeric precision of the training step: autocast dtype per device, and float32 losses.

train.precision=auto is fp32 on the CPU (bf16 autocast was slower there without AMX, see
docs/performance.md) and bf16 on CUDA devices that support it, else fp16 with a GradScaler.
"""

from __future__ import annotations

import functools

import torch

from sparsehead.core.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    """fp32, bf16 or fp16 for `device`; `auto` picks the one measured fastest there."""
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision=fp16 needs a CUDA device (this run uses {device}); use train.precision=bf16 or fp32"
        )
    return name


def autocast(precision: str, device: torch.device):
    """The context the forward pass runs in (a no-op for fp32)."""
    return torch.autocast(device.type, dtype=DTYPES[precision], enabled=precision != "fp32")


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not (then a no-op)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def float32_loss(fn):
    """Run a loss outside autocast, with half-precision tensor arguments cast to float32:
    softmax, cross-correlations and standardisation over the batch lose too much in bf16/fp16."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a)]
        device_type = tensors[0].device.type if tensors else "cpu"

        def up(a):
            return a.float() if torch.is_tensor(a) and a.dtype in (torch.float16, torch.bfloat16) else a

        with torch.autocast(device_type, enabled=False):
            return fn(*map(up, args), **{k: up(v) for k, v in kwargs.items()})

    return wrapper
