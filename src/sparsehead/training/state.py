"""TrainState: everything an exact resume restores, behind one state_dict() / load_state_dict().

The method (weights and its own state: EMA targets, queues, predictors), optimiser, learning-rate
schedule, gradient scaler, non-finite guard, SparseHead regulariser (adaptive lambda), every
process's random states and the step. The training loop saves `state_dict()` with each
checkpoint and loads it back on resume; nothing else is listed by hand.
"""
from __future__ import annotations

import torch

from sparsehead.training import resume


class TrainState:
    def __init__(self, method, optimizer, scheduler, scaler, guard, regularizer, augment_rng: torch.Generator,
                 step: int = 0):
        self.method, self.optimizer, self.scheduler, self.scaler = method, optimizer, scheduler, scaler
        self.guard, self.regularizer, self.augment_rng = guard, regularizer, augment_rng
        self.step = step

    def state_dict(self) -> dict:
        """The checkpoint entries of the training state. A collective under DDP: every rank calls
        it (the random states of all ranks are gathered)."""
        return {"model": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step,
                "rng": resume.gather_rng(resume.capture_rng(self.augment_rng)),
                "nonfinite": self.guard.state_dict(), "scaler": self.scaler.state_dict(),
                "sparsity": self.regularizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        resume.restore_rng(state["rng"], self.augment_rng)
        self.guard.load_state_dict(state["nonfinite"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if "sparsity" in state:  # lambda, step count, pruning masks; absent from older checkpoints
            self.regularizer.load_state_dict(state["sparsity"])
        self.step = state["step"]
