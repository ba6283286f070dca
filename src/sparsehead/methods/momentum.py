"""The momentum (EMA) copy of the online network that BYOL, MoCo v2, MoCo v3 and DirectPred regress
or contrast against.

The copy of the online backbone and projector gets no gradient; after each optimiser step it moves
as an exponential moving average xi <- tau xi + (1 - tau) theta of the online weights theta
(BYOL, Grill et al. 2020, section 3.2; MoCo's momentum update, He et al. 2020, eq. 2). The
momentum tau follows the method's schedule: BYOL's cosine from tau_base up to 1, or MoCo's
constant m.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, ClassVar

import torch
import torch.nn as nn

from sparsehead.core.options import opt
from sparsehead.methods.base import Applied, Method, encode_pair


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy moved only by ema_update: excluded from the optimiser and from SparseHead."""
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float, applied: Applied = True):
    """target <- momentum * target + (1 - momentum) * online; buffers (BN statistics) copied. Multi-tensor
    operations (a few kernels, not a loop over parameters). `applied` (True, or a device bool): where False
    (the step's update was skipped) the target stays as it was, decided on the device (the gated form's
    last bits may differ from the True form's: tau scales online separately, not in one fused add)."""
    targets, onlines = list(target.parameters()), [o.detach() for o in online.parameters()]
    t_buffers, o_buffers = list(target.buffers()), list(online.buffers())
    if applied is True:
        if targets:  # a module may have none (a fixed layer)
            torch._foreach_mul_(targets, momentum)
            torch._foreach_add_(targets, onlines, alpha=1 - momentum)
        if t_buffers:
            torch._foreach_copy_(t_buffers, o_buffers)
        return
    if targets:
        tau = torch.where(applied, momentum, 1.0)  # 1: the target stays (the online weights are finite)
        torch._foreach_mul_(targets, tau)
        torch._foreach_add_(targets, torch._foreach_mul(onlines, 1 - tau))
    for t, o in zip(t_buffers, o_buffers):
        t.copy_(torch.where(applied, o, t))


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2: from tau_base at k = 0 up to 1 at k = K
    (BYOL, Grill et al. 2020, section 3.2)."""
    return 1 - (1 - base) * (math.cos(math.pi * step / max(total_steps, 1)) + 1) / 2


def constant_momentum(base: float, step: int, total_steps: int) -> float:
    """m = base at every step (MoCo, He et al. 2020, section 3.2: m = 0.999)."""
    return base


def momentum_opt(default: float):
    return opt(
        default,
        "base EMA momentum of the target / key network (cosine schedule to 1 where the method has one)",
        min=0.0,
        max=1.0,
    )


class MomentumMethod(Method):
    """A method with a momentum copy of its online backbone and projector, moved by EMA after each
    optimiser step. Its Params have a `momentum` (momentum_opt): the schedule's base."""

    # Each method sets both. The attribute names of the copies of (backbone, projector): the
    # prefixes of their state_dict keys, so a method keeps the names its checkpoints have.
    MOMENTUM_COPIES: ClassVar[tuple[str, str]]
    # tau from (base, step k, total steps K): cosine_momentum or constant_momentum.
    momentum_schedule: ClassVar[Callable[[float, int, int], float]]

    def add_momentum_copies(self) -> None:
        """Register the frozen copies of the online backbone and projector under MOMENTUM_COPIES
        (a method calls it where its modules are built, so their order in the state_dict stays)."""
        backbone_name, projector_name = self.MOMENTUM_COPIES
        self.add_module(backbone_name, frozen_copy(self.backbone))
        self.add_module(projector_name, frozen_copy(self.projector))

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(copy, online) for the backbone, then the projector."""
        backbone_name, projector_name = self.MOMENTUM_COPIES
        return [(getattr(self, backbone_name), self.backbone), (getattr(self, projector_name), self.projector)]

    def momentum_embed(self, x: torch.Tensor) -> torch.Tensor:
        """The momentum copy's projection of x (the target of BYOL, the key of MoCo), no gradient."""
        (backbone, _), (projector, _) = self.momentum_pairs()
        with torch.no_grad():
            return projector(backbone(x))

    def momentum_embed_views(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The momentum copy's projections of two views (as project_views: one backbone forward of both
        where the backbone has no batch statistics), no gradient."""
        (backbone, _), (projector, _) = self.momentum_pairs()
        with torch.no_grad():
            r1, r2 = encode_pair(backbone, x1, x2)
            return projector(r1), projector(r2)

    @torch.no_grad()
    def after_step(self, step, total_steps, applied: Applied = True):
        """The EMA of the momentum copies; `applied` as ema_update's."""
        momentum = self.momentum_schedule(self.params.momentum, step, total_steps)
        for target, online in self.momentum_pairs():
            ema_update(target, online, momentum, applied)
