"""What the training loop does when a step goes numerically wrong.

A NaN/Inf loss or gradient either stops the run (train.nonfinite=stop: nothing is updated, so the
last checkpoint stays the last good state) or skips the step (train.nonfinite=skip: no optimiser
update, no EMA update, BatchNorm statistics put back) and counts it.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from sparsehead.config import TrainConfig
from sparsehead.core import distributed as dist
from sparsehead.core.errors import SparseheadError
from sparsehead.core.step_hook import StepHook


class NonFiniteError(SparseheadError, RuntimeError):
    """The run met a NaN/Inf and stopped; the message names the step and the fix."""


class NonFiniteGuard(StepHook):
    state_key = "nonfinite"

    def __init__(self, train: TrainConfig, model: nn.Module, run_dir):
        self.mode = train.nonfinite
        self.max_skips = train.nonfinite_max_skips
        self.model = model
        self.run_dir = run_dir
        self.skipped = 0  # steps skipped over the whole run
        self.consecutive = 0
        self._buffers: list[torch.Tensor] = []

    def before_step(self) -> None:
        """Before the forward pass: remember BatchNorm statistics, which a bad batch would poison."""
        if self.mode == "skip":
            self._buffers = [b.detach().clone() for b in self.model.buffers()]

    def allows_update(self, step: int, loss: torch.Tensor, check_grads: bool = True) -> bool:
        """After backward: True when loss and gradients are finite and the update may go ahead.

        check_grads=False when an fp16 GradScaler is in use: overflowing scaled gradients are then
        routine, and the scaler itself skips those steps and lowers its scale.
        """
        grads = [p.grad for p in self.model.parameters() if p.grad is not None] if check_grads else []
        grad_max = torch.nn.utils.get_total_norm(grads, norm_type=float("inf")) if grads else loss.new_zeros(())
        bad = torch.stack([~loss.detach().isfinite(), ~grad_max.isfinite()]).float()
        # One verdict for every process (under DDP a rank alone skipping, or keeping its fp16 loss scale
        # while the others lower theirs, would set the replicas apart); then one sync.
        loss_ok, grads_ok = (dist.all_reduce_sum_no_grad(bad) == 0).tolist()
        if loss_ok and grads_ok:
            self.consecutive = 0
            return True
        what = f"loss ({loss.item()})" if not loss_ok else "gradient (the loss was finite)"
        if self.mode == "stop":
            raise NonFiniteError(
                f"non-finite {what} at step {step}; stopped before updating, so the last checkpoint in "
                f"{self.run_dir} is the last good state. Lower optim.lr, check the data, or set "
                "train.nonfinite=skip to skip such steps."
            )
        for saved, live in zip(self._buffers, self.model.buffers()):
            live.copy_(saved)
        self.skipped += 1
        self.consecutive += 1
        warnings.warn(f"skipping step {step}: non-finite {what} ({self.skipped} skipped so far)")
        if self.consecutive >= self.max_skips:
            raise NonFiniteError(
                f"{self.consecutive} consecutive steps up to step {step} had a non-finite loss or gradient "
                f"(train.nonfinite_max_skips={self.max_skips}); the run is diverging. Lower optim.lr or "
                f"check the data; the last checkpoint in {self.run_dir} is intact."
            )
        return False

    @torch.no_grad()
    def before_checkpoint(self, step: int) -> None:
        """Before a checkpoint: never save weights an update has made non-finite."""
        bad = [name for name, p in self.model.named_parameters() if not bool(p.isfinite().all())]
        if bad:
            raise NonFiniteError(
                f"parameters became non-finite by step {step} ({', '.join(bad[:3])}...); not saving them, "
                f"so the last checkpoint in {self.run_dir} is intact. Lower optim.lr."
            )

    def logs(self) -> dict[str, int]:
        return {"nonfinite_skipped": self.skipped} if self.mode == "skip" else {}

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped, self.consecutive = state["skipped"], state["consecutive"]


def scaler_step(scaler, optimizer) -> bool:
    """scaler.step + scaler.update; False when the GradScaler skipped the update (fp16 gradients
    that overflowed: it then lowers its scale), so the hooks' after_step must not run.
    Without fp16 (a disabled scaler) every step is applied and nothing is read back."""
    if not scaler.is_enabled():
        scaler.step(optimizer)
        scaler.update()
        return True
    before = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return not update_skipped(before, scaler.get_scale())


def update_skipped(scale_before: float, scale_after: float) -> bool:
    """The GradScaler only ever lowers its scale when it skipped a step whose gradients overflowed."""
    return scale_after < scale_before
