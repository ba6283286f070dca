"""The training step: one optimisation step and nothing else (no logging, no I/O), the same for every
method, head, data set and device. It reads nothing back from the device (docs/performance.md, the
sync-free step): the hooks' verdict on the update, the update itself and the hooks' work after it are
decided on the device, under fp16 too (the GradScaler's verdict on the gradients joins the hooks')."""

from __future__ import annotations

import torch

from sparsehead.core.precision import autocast
from sparsehead.training.faults import gated_update, scaler_verdict, update_verdict
from sparsehead.training.hooks import after_update, total_penalty
from sparsehead.training.run import Run, StepOutput


def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
    """Views, forward, the method's loss plus the hooks' penalty, backward, the optimiser update (unless
    a hook vetoes it, a non-finite loss or gradient, or under fp16 the GradScaler finds an overflow), the
    hooks' after-step work, the schedule."""
    hooks, state = run.hooks, run.state
    for hook in hooks:
        hook.before_step()
    crops = run.views(images.to(run.device, non_blocking=True), state.augment_rng)  # global views, then local
    with autocast(run.precision, run.device):  # the losses themselves run in float32
        ssl_loss, logs, r, z = run.model(*crops)
    for hook in hooks:
        hook.observe(labels, r, z)
    penalty = total_penalty(hooks)
    loss = ssl_loss + penalty
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    step = state.step + 1
    lr = run.scheduler.get_last_lr()[0]
    # fp16: the hooks check the loss only (overflowing scaled gradients are routine), the scaler the gradients.
    fp16 = run.scaler.is_enabled()
    applied = update_verdict(hooks, step, loss, not fp16) & scaler_verdict(run.scaler, run.optimizer)
    gated_update(run.optimizer, applied)  # True, or a device bool: whether the update went ahead
    run.scaler.update()  # fp16: the scale lowered after an overflow, raised after a run without; on the device
    after_update(hooks, step, lr, applied)
    run.scheduler.step()
    state.step = step
    return StepOutput(ssl_loss.detach(), penalty.detach(), logs)
