"""Optimisers (Adam/AdamW, SGD, LARS) and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
import torch.nn as nn

from sparsehead.config import OptimConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al. 2017), as in SimCLR/Barlow Twins:
    d = g + wd w, trust = eta ||w|| / ||d|| (the reference code's ||g + wd w||, not the paper's
    ||g|| + wd ||w||), v <- momentum v + trust d, w <- w - lr v (lr outside the momentum, as Barlow
    Twins). Biases and BatchNorm parameters (1-d tensors) get neither weight decay nor adaptation:
    LARS's own exclusion rule (SimCLR's and Barlow Twins' code), so optim.weight_decay_filter does
    not apply to it.
    Checked against closed-form steps in tests/training/test_optim.py."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, eta=0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))
        # Takes grad_scale / found_inf as the fused optimisers do: a GradScaler or the non-finite guard
        # skips an update on the device, with nothing read back (training/faults.py: gated_update).
        self._step_supports_amp_scaling = True

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient, in multi-tensor operations (a few kernels per
        group, not a loop over parameters); where found_inf is set, parameters and momenta stay."""
        loss = closure() if closure is not None else None
        grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                grads = [p.grad for p in params]
                if grad_scale is not None:
                    grads = torch._foreach_div(grads, grad_scale)
                if found_inf is not None:  # the skipped update's gradients may be NaN: replaced by zeros
                    grads = [torch.where(found_inf > 0, 0.0, g) for g in grads]
                bufs = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
                lars_update(params, grads, bufs, group, found_inf)
        return loss


def lars_update(params, grads, bufs, group: dict, found_inf: Optional[torch.Tensor]) -> None:
    """LARS's update of one parameter group (the class docstring), in place; found_inf (a device float,
    1: skip) keeps the parameters and momenta exactly as they were."""
    adapted = [i for i, p in enumerate(params) if p.ndim > 1]
    updates = list(grads)
    if adapted:
        weights = [params[i] for i in adapted]
        decayed = torch._foreach_add([grads[i] for i in adapted], weights, alpha=group["weight_decay"])
        w_norm, d_norm = torch.stack(torch._foreach_norm(weights)), torch.stack(torch._foreach_norm(decayed))
        trust = torch.where((w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm, torch.ones_like(w_norm))
        torch._foreach_mul_(decayed, list(trust.unbind()))
        for i, d in zip(adapted, decayed):
            updates[i] = d
    if found_inf is None:
        torch._foreach_mul_(bufs, group["momentum"])
        torch._foreach_add_(bufs, updates)
        torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return
    keep = 1 - found_inf  # 0 when skipped: v <- 1 v + 0 d, w <- w - 0 v
    torch._foreach_mul_(bufs, torch.where(found_inf > 0, 1.0, group["momentum"]))
    torch._foreach_add_(bufs, torch._foreach_mul(updates, keep))
    torch._foreach_add_(params, torch._foreach_mul(bufs, -group["lr"] * keep))


def peak_lr(cfg: OptimConfig, batch_size: Optional[int]) -> float:
    """The learning rate the schedule peaks at: optim.lr, or with optim.lr_scaling=linear the papers'
    rule base lr x batch / 256 (SimCLR, BYOL, Barlow Twins, MoCo v3), batch = train.batch_size over
    all processes."""
    if cfg.lr_scaling == "none":
        return cfg.lr
    if batch_size is None:
        raise ValueError("optim.lr_scaling=linear scales optim.lr by the batch size: pass batch_size")
    return cfg.lr * batch_size / 256


def describe_lr(cfg: OptimConfig, batch_size: int) -> str:
    """The peak lr and where it comes from, printed at the start of a run."""
    lr = peak_lr(cfg, batch_size)
    if cfg.lr_scaling == "linear":
        return f"peak learning rate {lr:.6g} = optim.lr {cfg.lr:g} x train.batch_size {batch_size} / 256"
    return f"peak learning rate {lr:.6g} = optim.lr (optim.lr_scaling=none)"


def is_vision_transformer(model: nn.Module) -> bool:
    return hasattr(getattr(model, "backbone", None), "patch_embed")


def filters_weight_decay(cfg: OptimConfig, model: nn.Module) -> bool:
    """optim.weight_decay_filter: auto enables it where the references do, AdamW with a ViT (DINO,
    timm's recipes); LARS has its own rule (its docstring) and never takes the filter."""
    if cfg.weight_decay_filter == "auto":
        return cfg.name == "adamw" and is_vision_transformer(model)
    return cfg.weight_decay_filter == "enabled"


def decayed(name: str, p: torch.Tensor, exempt: set[str]) -> bool:
    """Whether weight decay acts on parameter `name` under the filter: not on 1-d tensors (norm
    weights and biases), biases, or what the backbone's no_weight_decay() names (a timm ViT's
    pos_embed and cls_token), the rule of timm's param_groups_weight_decay and DINO's."""
    return p.ndim > 1 and not name.endswith(".bias") and name not in exempt


def param_groups(cfg: OptimConfig, model: nn.Module) -> list[dict]:
    """The parameters that require gradients (EMA targets and set predictors are excluded by being
    frozen): one group, or with the weight-decay filter a second group without weight decay."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not filters_weight_decay(cfg, model):
        return [{"params": [p for _, p in named]}]
    no_weight_decay = getattr(getattr(model, "backbone", None), "no_weight_decay", set)
    exempt = {f"backbone.{name}" for name in no_weight_decay()}
    return [
        {"params": [p for name, p in named if decayed(name, p, exempt)]},
        {"params": [p for name, p in named if not decayed(name, p, exempt)], "weight_decay": 0.0},
    ]


def build_optimizer(cfg: OptimConfig, model: nn.Module, batch_size: Optional[int] = None) -> torch.optim.Optimizer:
    """The optimiser of `model`'s parameter groups at the peak lr (`batch_size`: train.batch_size,
    needed by optim.lr_scaling=linear)."""
    params, lr = param_groups(cfg, model), peak_lr(cfg, batch_size)
    if cfg.name == "lars" and is_vision_transformer(model):
        warnings.warn(
            "optim.name=lars with a vision transformer: LARS is known to make ViT training unstable "
            "or collapse (Chen et al. 2021, MoCo v3, train ViTs with AdamW); use optim.name=adamw "
            "(configs/cifar10_vit_tiny.yaml), see docs/timm.md"
        )
    # Fused: one kernel per group, 3.6x faster than foreach on this CPU (docs/performance.md), and they
    # skip an update on the device (training/faults.py: gated_update).
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)
    if cfg.name == "lars":
        return LARS(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimiser {cfg.name!r}")


def warmup_cosine(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """Linear warm-up to the peak, then cosine decay to min_lr_ratio * peak, stepped per batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
