"""What the training loop does when a step goes numerically wrong.

A NaN/Inf loss or gradient either stops the run (train.nonfinite=stop: the last checkpoint stays the
last good state) or skips the step (train.nonfinite=skip: no optimiser update, no EMA update, BatchNorm
statistics put back) and counts it.

The verdict stays on the device: a step that does not log reads nothing back. It is recorded there
(the first bad step since the last check, its loss, the counts) and read by check() at the next log
line, epoch end or checkpoint, which warns, or raises before anything of the bad steps is saved.
"""

from __future__ import annotations

import warnings
from typing import Union

import torch
import torch.nn as nn

from sparsehead.config import TrainConfig
from sparsehead.core import distributed as dist
from sparsehead.core.errors import SparseheadError
from sparsehead.core.step_hook import StepHook

Verdict = Union[bool, torch.Tensor]  # True, or a device bool: whether a step's update went ahead


class NonFiniteError(SparseheadError, RuntimeError):
    """The run met a NaN/Inf and stopped; the message names the step and the fix."""


class NonFiniteGuard(StepHook):
    state_key = "nonfinite"

    def __init__(self, train: TrainConfig, model: nn.Module, run_dir):
        self.mode = train.nonfinite
        self.max_skips = train.nonfinite_max_skips
        self.model = model
        self.run_dir = run_dir
        device = next(model.parameters()).device
        # skipped (over the run), consecutive, then since the last check: the first bad step (0: none),
        # whether its loss was bad, the bad steps, the last one; the step the skips reached max_skips at.
        self._counts = torch.zeros(7, dtype=torch.int64, device=device)
        self._first_loss = torch.zeros((), device=device)  # the loss of the first bad step since the check
        self._saved: list[torch.Tensor] = []
        self._step = 0  # the step last checked by allows_update (the host's count: no read)

    def before_step(self) -> None:
        """Before the forward pass: remember BatchNorm statistics, which a bad batch would poison."""
        if self.mode == "skip":
            live = list(self.model.buffers())
            if not self._saved:
                self._saved = [b.detach().clone() for b in live]
            elif live:
                torch._foreach_copy_(self._saved, live)

    @torch.no_grad()
    def allows_update(self, step: int, loss: torch.Tensor, check_grads: bool = True) -> Verdict:
        """After backward: whether the update may go ahead, decided and recorded on the device.

        stop: True (the run stops at the next check, before a checkpoint of any step since, so no update
        need be withheld); skip: a device bool, False where the loss or a gradient is not finite.
        check_grads=False when an fp16 GradScaler is in use: overflowing scaled gradients are then
        routine, and the scaler itself skips those steps and lowers its scale.
        """
        grads = [p.grad for p in self.model.parameters() if p.grad is not None] if check_grads else []
        grad_max = torch.nn.utils.get_total_norm(grads, norm_type=float("inf")) if grads else loss.new_zeros(())
        bad = torch.stack([~loss.detach().isfinite(), ~grad_max.isfinite()]).float()
        # One verdict for every process (under DDP a rank alone skipping, or keeping its fp16 loss scale
        # while the others lower theirs, would set the replicas apart): a collective, no read.
        loss_bad, grads_bad = (dist.all_reduce_sum_no_grad(bad) > 0).unbind()
        bad_step = loss_bad | grads_bad
        self._step = step
        self._record(step, loss, loss_bad, bad_step)
        if self.mode == "stop":
            return True
        for saved, live in zip(self._saved, self.model.buffers()):
            live.copy_(torch.where(bad_step, saved, live))
        return ~bad_step

    def _record(self, step: int, loss: torch.Tensor, loss_bad: torch.Tensor, bad: torch.Tensor) -> None:
        """The counts of check() and state_dict(), moved on the device."""
        skipped, consecutive, first, first_was_loss, new, last, diverged = self._counts.unbind()
        is_first = (first == 0) & bad
        self._first_loss = torch.where(is_first, loss.detach().float(), self._first_loss)
        consecutive = (consecutive + bad) * bad
        self._counts = torch.stack(
            [
                skipped + bad if self.mode == "skip" else skipped,
                consecutive,
                torch.where(is_first, step, first),
                torch.where(is_first, loss_bad, first_was_loss),
                new + bad,
                torch.where(bad, step, last),
                torch.where((diverged == 0) & (consecutive >= self.max_skips), step, diverged),
            ]
        )

    def check(self) -> None:
        """The recorded verdicts, read (at a log line, an epoch's end, a checkpoint; the same on every
        process): raises for a bad step under stop or a diverging run under skip, else warns of skips."""
        skipped, _, first, first_was_loss, new, last, diverged = self._counts.tolist()
        if not first:
            return
        what = f"loss ({self._first_loss.item()})" if first_was_loss else "gradient (the loss was finite)"
        if self.mode == "stop":
            raise NonFiniteError(
                f"non-finite {what} at step {first}; stopped (at step {self._step}) with no checkpoint of it or a "
                f"later step, so the last checkpoint in {self.run_dir} is the last good state. Lower optim.lr, check "
                "the data, or set train.nonfinite=skip to skip such steps."
            )
        more = f" and {new - 1} more up to step {last}" if new > 1 else ""
        warnings.warn(f"skipping step {first}: non-finite {what}{more} ({skipped} skipped so far)")
        self._counts[2:6] = 0
        if diverged:
            raise NonFiniteError(
                f"{self.max_skips} consecutive steps up to step {diverged} had a non-finite loss or gradient "
                f"(train.nonfinite_max_skips={self.max_skips}); the run is diverging. Lower optim.lr or "
                f"check the data; the last checkpoint in {self.run_dir} is intact."
            )

    @torch.no_grad()
    def before_checkpoint(self, step: int) -> None:
        """Before a checkpoint: never save a step the run must stop at, or weights an update has made
        non-finite."""
        self.check()
        bad = [name for name, p in self.model.named_parameters() if not bool(p.isfinite().all())]
        if bad:
            raise NonFiniteError(
                f"parameters became non-finite by step {step} ({', '.join(bad[:3])}...); not saving them, "
                f"so the last checkpoint in {self.run_dir} is intact. Lower optim.lr."
            )

    def end_of_epoch(self, step: int, steps_per_epoch: int) -> dict:
        """At an epoch's end, before its evaluations: the recorded verdicts."""
        if step % steps_per_epoch == 0:
            self.check()
        return {}

    @property
    def skipped(self) -> int:
        """Steps skipped over the whole run (a read of the device)."""
        return int(self._counts[0])

    def logs(self) -> dict[str, int]:
        self.check()
        return {"nonfinite_skipped": self.skipped} if self.mode == "skip" else {}

    def state_dict(self) -> dict[str, int]:
        skipped, consecutive = self._counts[:2].tolist()
        return {"skipped": skipped, "consecutive": consecutive}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._counts.zero_()
        self._counts[0], self._counts[1] = state["skipped"], state["consecutive"]


def update_verdict(hooks: list[StepHook], step: int, loss: torch.Tensor, check_grads: bool = True) -> Verdict:
    """Every hook's allows_update (each is asked), combined without a read: True, or a device bool."""
    verdict: Verdict = True
    for hook in hooks:
        verdict = verdict & hook.allows_update(step, loss, check_grads)
    return verdict


def scaler_verdict(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> Verdict:
    """fp16: the GradScaler's own verdict, on the device: the gradients unscaled in place (its unscale_,
    no read) and True where none overflowed (its found_inf, the flags its update() lowers the scale by).
    True where no scaler is in use (bf16, fp32)."""
    if not scaler.is_enabled():
        return True
    scaler.unscale_(optimizer)
    return sum(scaler._found_inf_per_device(optimizer).values()) == 0


def gated_update(optimizer: torch.optim.Optimizer, applied: Verdict) -> None:
    """optimizer.step() where `applied` holds, on gradients already unscaled. Fused Adam/AdamW/SGD and LARS
    skip the update themselves given a found_inf tensor (as a GradScaler drives them), so nothing is read
    back; another optimiser reads the verdict."""
    if applied is True:
        optimizer.step()
    elif getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.grad_scale, optimizer.found_inf = None, (~applied).float()
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
    elif bool(applied):
        optimizer.step()
