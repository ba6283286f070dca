"""The training step: one optimisation step and nothing else (no logging, no I/O), the same for every
method, head, data set and device. It reads nothing back from the device (docs/performance.md, the
sync-free step): the hooks' verdict on the update, the update itself and the hooks' work after it are
decided on the device. Under fp16 the GradScaler's own skip is read back, once a step."""

from __future__ import annotations

import torch

from sparsehead.core.precision import autocast
from sparsehead.training.faults import gated_update, scaler_step, update_verdict
from sparsehead.training.hooks import after_update, total_penalty
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
    lr = run.scheduler.get_last_lr()[0]
    if run.scaler.is_enabled():
        # fp16: the scaler itself skips the updates whose gradients overflowed, so the hooks check only the
        # loss; after an update either skipped, the hooks do not shrink, prune or move the EMA.
        if all([bool(hook.allows_update(step, loss, False)) for hook in hooks]) and scaler_step(
            run.scaler, run.optimizer
        ):
            for hook in hooks:
                hook.after_step(step, lr)
    else:
        applied = update_verdict(hooks, step, loss)  # True, or a device bool
        gated_update(run.optimizer, applied)
        after_update(hooks, step, lr, applied)
    run.scheduler.step()
    state.step = step
    return StepOutput(ssl_loss.detach(), penalty.detach(), logs)
