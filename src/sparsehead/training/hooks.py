"""The training hooks (core.step_hook.StepHook) that are not owned elsewhere, hooks added from
outside the package (register_hook: a plugin's monitor), and the one way to gather what every hook gives."""

from __future__ import annotations

import functools
import operator
from typing import Callable

import torch

from sparsehead.config import Config
from sparsehead.core.step_hook import StepHook
from sparsehead.methods.base import Method

HookFactory = Callable[[Config, torch.nn.Module], StepHook]
REGISTERED: list[HookFactory] = []  # called in setup with the run's config and method, after the built-in hooks


def register_hook(factory: HookFactory) -> HookFactory:
    """Add a step hook to every run from now on (a plugin module, SPARSEHEAD_PLUGINS, calls it at import):
    `factory(cfg, method)` returns the hook. Usable as a decorator."""
    REGISTERED.append(factory)
    return factory


class MethodAfterStep(StepHook):
    """The method's own work after each step (EMA targets and their momentum schedule, DirectPred's
    predictor, SwAV's prototypes), gated by the method on the device on whether the update went ahead."""

    def __init__(self, method: Method, total_steps: int):
        self.method, self.total_steps = method, total_steps

    def after_update(self, step: int, lr: float, applied) -> None:
        self.method.after_step(step, self.total_steps, applied)


def total_penalty(hooks: list[StepHook]) -> torch.Tensor:
    """The sum of the hooks' loss terms (SparseHead's L2,1 penalty)."""
    return functools.reduce(operator.add, [p for hook in hooks if (p := hook.penalty()) is not None])


def after_update(hooks: list[StepHook], step: int, lr: float, applied) -> None:
    """Every hook's work after the optimiser update, in order. A hook with after_update(step, lr, applied)
    does it on the device, conditioned there on `applied` (True, or a device bool: whether the update
    went ahead); another hook's after_step runs only after an update, which reads `applied` back (once)."""
    went_ahead = None
    for hook in hooks:
        if (gated := getattr(hook, "after_update", None)) is not None:
            gated(step, lr, applied)
        elif type(hook).after_step is not StepHook.after_step:
            went_ahead = (applied is True or bool(applied)) if went_ahead is None else went_ahead
            if went_ahead:
                hook.after_step(step, lr)


def gathered(hooks: list[StepHook], call) -> dict[str, float]:
    """One dict of what `call(hook)` returns for every hook, in the hooks' order."""
    return {k: v for hook in hooks for k, v in call(hook).items()}


def stop_reasons(hooks: list[StepHook], step: int) -> list[str]:
    """Why the run must stop after `step`, from every hook (each is asked: some agree across processes)."""
    return [reason for reason in [hook.stop_reason(step) for hook in hooks] if reason]
