"""TrainState: everything an exact resume restores, behind one state_dict() / load_state_dict().

The method (weights and its own state: EMA targets, queues, predictors), optimiser, learning-rate
schedule, gradient scaler, every step hook that has state (the non-finite guard, the SparseHead
regulariser's lambda and masks: each under its state_key), every process's random states and the
step, the loop's one step counter. The training loop saves `state_dict()` with each
checkpoint and loads it back on resume; nothing else is listed by hand.
"""

from __future__ import annotations

import torch

from sparsehead.core.step_hook import StepHook
from sparsehead.training import resume


class TrainState:
    def __init__(
        self, method, optimizer, scheduler, scaler, hooks: list[StepHook], augment_rng: torch.Generator, step: int = 0
    ):
        self.method, self.optimizer, self.scheduler, self.scaler = method, optimizer, scheduler, scaler
        self.hooks, self.augment_rng = [h for h in hooks if h.state_key], augment_rng
        self.step = step

    def state_dict(self) -> dict:
        """The checkpoint entries of the training state. A collective under DDP: every rank calls
        it (the random states of all ranks are gathered)."""
        return {
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": resume.gather_rng(resume.capture_rng(self.augment_rng)),
            "scaler": self.scaler.state_dict(),
            **{h.state_key: h.state_dict() for h in self.hooks},
        }

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        resume.restore_rng(state["rng"], self.augment_rng)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for hook in self.hooks:
            if hook.state_key in state:  # older checkpoints lack the newer hooks' state
                hook.load_state_dict(state[hook.state_key])
        self.step = state["step"]
