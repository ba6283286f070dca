"""The training loop's hooks (core.step_hook.StepHook) that are not owned elsewhere, and the loop's
one way to gather what every hook gives."""

from __future__ import annotations

import functools
import operator

import torch

from sparsehead.core.step_hook import StepHook


class MethodAfterStep(StepHook):
    """The method's own work after each update (EMA targets and their momentum schedule, queues)."""

    def __init__(self, method, total_steps: int):
        self.method, self.total_steps = method, total_steps

    def after_step(self, step: int, lr: float) -> None:
        self.method.after_step(step, self.total_steps)


def total_penalty(hooks: list[StepHook]) -> torch.Tensor:
    """The sum of the hooks' loss terms (SparseHead's L2,1 penalty)."""
    return functools.reduce(operator.add, [p for hook in hooks if (p := hook.penalty()) is not None])


def gathered(hooks: list[StepHook], call) -> dict[str, float]:
    """One dict of what `call(hook)` returns for every hook, in the hooks' order."""
    return {k: v for hook in hooks for k, v in call(hook).items()}
