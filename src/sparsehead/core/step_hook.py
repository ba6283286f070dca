"""The one protocol for what runs around the training step (the SparseHead regulariser, the
non-finite guard, the monitors, the collapse alarm, a method's own after-step work such as EMA
targets, the stop signals).

The training loop calls every hook the same way and in the same order, and the training state
saves and restores them from that one list; a new monitor plugs in without touching the loop.
Each method has a default that does nothing, so a hook overrides only what it needs. In the order
a run calls them: before_step, observe, penalty, allows_update, after_step (the step); logs and
notes (a logging step); end_of_epoch, before_checkpoint, stop_reason (a step boundary); at_end.

The step reads nothing back from the device (training/step.py). A hook whose after-step work can be
gated on the device defines `after_update(step, lr, applied)` instead of after_step: it is called
after every step with `applied` (True, or a 0-dim device bool: whether the update went ahead) and
must not read it (training.hooks.after_update); the after_step of the other hooks runs only after an
update that went ahead, which costs one read of the verdict per step.
"""

from __future__ import annotations

from typing import Optional

import torch


class StepHook:
    state_key: Optional[str] = None  # the checkpoint entry holding state_dict() (None: no state)

    # --- the step ------------------------------------------------------------------------------

    def before_step(self) -> None:
        """At the start of a training step, before the views are made."""

    def observe(self, labels: torch.Tensor, r: Optional[torch.Tensor], z: tuple = ()) -> None:
        """The step's labels, representation r (of the first view; None where not kept) and
        embeddings z of the global views (view 1 first; empty where the method gives none)."""

    def penalty(self) -> Optional[torch.Tensor]:
        """A term added to the method's loss (None: none)."""
        return None

    def allows_update(self, step: int, loss: torch.Tensor, check_grads: bool) -> bool | torch.Tensor:
        """After backward: False (or a 0-dim device bool, decided without a read) vetoes this step's
        optimiser update (the non-finite guard). check_grads=False when an fp16 GradScaler checks the
        gradients itself."""
        return True

    def after_step(self, step: int, lr: float) -> None:
        """After an optimiser update that went ahead: `step` is the number of steps taken with it,
        `lr` the learning rate it used."""

    # --- between steps -------------------------------------------------------------------------

    def logs(self) -> dict[str, float]:
        """What to log at a logging step."""
        return {}

    def notes(self, step: int) -> dict[str, str]:
        """After a logging step: short notes for the progress bar (an alarm that is on)."""
        return {}

    def end_of_epoch(self, step: int, steps_per_epoch: int) -> dict[str, float]:
        """What to log when `step` closes an epoch (evaluations due then)."""
        return {}

    def before_checkpoint(self, step: int) -> None:
        """Before the training state of `step` is saved: raise to keep a bad state out of it."""

    def stop_reason(self, step: int) -> Optional[str]:
        """At each step boundary, after its checkpoint: why the run must stop now (None: go on).
        Every process calls it, so a hook may agree with the other processes here."""
        return None

    def final_logs(self, step: int) -> dict[str, float]:
        """After the last step (or a stop), before its checkpoint: what a hook still has to log (work it
        finished in the background: the collapse monitor's last spectra). Every process calls it."""
        return {}

    def at_end(self, step: int, finished: bool) -> None:
        """After the last step and its checkpoint (finished: every step was taken); raise to end
        the command with a hook's error (a collapse, a pre-emption)."""

    # --- exact resume --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned (called only where the checkpoint holds it)."""
