"""The training step: one optimisation step and nothing else (no logging, no I/O), the same for every
method, head, data set and device."""

from __future__ import annotations

import torch

from sparsehead.core.precision import autocast
from sparsehead.training.faults import scaler_step
from sparsehead.training.hooks import total_penalty
from sparsehead.training.run import Run, StepOutput


def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
    """Views, forward, the method's loss plus the hooks' penalty, backward, the optimiser update (unless
    a hook vetoes it: a non-finite loss or gradient), the hooks' after-step work, the schedule."""
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
    # Under fp16 the scaler itself skips the updates whose gradients overflowed, so the hooks check only
    # the loss then; after an update either skipped, the hooks do not shrink, prune or move the EMA.
    check_grads = not run.scaler.is_enabled()
    if all([hook.allows_update(step, loss, check_grads) for hook in hooks]) and scaler_step(run.scaler, run.optimizer):
        lr = run.scheduler.get_last_lr()[0]
        for hook in hooks:
            hook.after_step(step, lr)
    run.scheduler.step()
    state.step = step
    return StepOutput(ssl_loss.detach(), penalty.detach(), logs)
