"""BatchNorm over the global batch of all DDP processes, on any device.

torch.nn.SyncBatchNorm refuses CPU tensors (it needs CUDA-like devices), so CPU runs under gloo
use GlobalBatchNorm: the batch mean and variance are sums all-reduced WITH gradients, so the
backward pass is that of BatchNorm on the concatenated batch. On CUDA torch's fused version is used.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from sparsehead.core.distributed import global_moments, is_distributed, world_size


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm1d/2d whose training statistics span every process; plain BatchNorm otherwise."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed() and world_size() > 1):
            return super().forward(x)
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean, var, count = global_moments(x, [0] + list(range(2, x.dim())))  # all but the channels
        mean, var = mean.view(-1), var.view(-1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / max(count - 1, 1), alpha=m)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of `module` made global across processes (same state_dict keys)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        like = module.weight if module.affine else module.running_mean
        bn = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device=device,
            dtype=like.dtype if like is not None else None,
        )
        bn.load_state_dict(module.state_dict())
        bn.train(module.training)
        if module.affine:
            bn.weight.requires_grad_(module.weight.requires_grad)
            bn.bias.requires_grad_(module.bias.requires_grad)
        return bn
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module
