"""The one protocol for what runs around the optimiser step (the SparseHead regulariser, the
non-finite guard, the online monitors, a method's own after-step work such as EMA targets).

The training loop calls every hook the same way and in the same order, and the training state
saves and restores them from that one list; a new monitor plugs in without touching the loop.
Each method has a default that does nothing, so a hook overrides only what it needs.
"""

from __future__ import annotations

from typing import Optional

import torch


class StepHook:
    state_key: Optional[str] = None  # the checkpoint entry holding state_dict() (None: no state)

    def before_step(self) -> None:
        """At the start of a training step, before the views are made."""

    def observe(self, labels: torch.Tensor, r: Optional[torch.Tensor], z: tuple = ()) -> None:
        """The step's labels, representation r (of the first view; None where not kept) and
        embeddings z of the global views (view 1 first; empty where the method gives none)."""

    def penalty(self) -> Optional[torch.Tensor]:
        """A term added to the method's loss (None: none)."""
        return None

    def after_step(self, step: int, lr: float) -> None:
        """After an optimiser update that went ahead: `step` is the number of steps taken with it,
        `lr` the learning rate it used."""

    def logs(self) -> dict[str, float]:
        """What to log at a logging step."""
        return {}

    def end_of_epoch(self, step: int, steps_per_epoch: int) -> dict[str, float]:
        """What to log when `step` closes an epoch (evaluations due then)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned (called only where the checkpoint holds it)."""
