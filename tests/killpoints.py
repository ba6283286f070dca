"""Fault injection for the tests, as a plugin (SPARSEHEAD_PLUGINS=killpoints; conftest.run_cli loads it
whenever SPARSEHEAD_TEST_SIGKILL is set): SIGKILL a pretraining process where pre-emption or the OOM
killer would, with no test code in the package.

SPARSEHEAD_TEST_SIGKILL="step:K" fires at the boundary after step K (after its checkpoint, if any);
"checkpoint:K" fires halfway through writing checkpoint K, after its bytes are written and before it
is renamed into place.
"""

from __future__ import annotations

import os
import re
import signal

import torch

from sparsehead.core.step_hook import StepHook
from sparsehead.training.hooks import register_hook

KILL_ENV = "SPARSEHEAD_TEST_SIGKILL"


def _kill_if(where: str, step: int) -> None:
    if os.environ.get(KILL_ENV) == f"{where}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


@register_hook
class KillAtStep(StepHook):
    def __init__(self, cfg, method):
        pass

    def stop_reason(self, step: int):
        _kill_if("step", step)
        return None


_save = torch.save


def _save_then_maybe_kill(obj, f, *args, **kwargs):
    """torch.save, then SIGKILL when `f` is the temporary file of the named checkpoint."""
    _save(obj, f, *args, **kwargs)
    name = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else str(f)
    if found := re.search(r"ckpt-(\d+)\.pt", name):
        f.flush()
        _kill_if("checkpoint", int(found.group(1)))


torch.save = _save_then_maybe_kill
