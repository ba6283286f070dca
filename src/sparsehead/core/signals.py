"""Signals that ask a run to stop cleanly (pre-emption): a handler that only sets a flag.

The training loop installs `StopSignals` for the run's duration (a context manager that puts the
previous handlers back on exit) and reads `.requested` at each step boundary, where it can write a
checkpoint and leave. SIGINT is special: the first one sets the flag like the others, a second one
raises KeyboardInterrupt at once (Ctrl-C twice: abort without waiting for the step to end).
A signal the process inherited as ignored (SIGINT and SIGHUP under `nohup cmd &`) stays ignored:
whoever started it asked that those signals not reach it.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable, Optional

import torch
import torch.distributed as tdist

from sparsehead.core import distributed as dist
from sparsehead.core.errors import ConfigError

NAMES = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP")  # those train.preempt_signals may name


def lookup(name: str) -> signal.Signals:
    if name not in NAMES or not hasattr(signal, name):
        raise ConfigError(f"train.preempt_signals: {name!r} is not one of {', '.join(NAMES)} on this system")
    return getattr(signal, name)


class StopSignals:
    """Catch `names` while inside the `with` block; `.requested` names the first signal caught."""

    def __init__(self, names: list[str]):
        self.signals = [lookup(n) for n in dict.fromkeys(names)]
        self.requested: Optional[str] = None
        self.act: Optional[Callable[[str], None]] = None  # called at once on a signal (it may raise)
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.requested is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: abort now
        if self.requested is None:
            self.requested = signal.Signals(signum).name
        if self.act is not None:  # where no step boundary follows (a final evaluation): act now
            self.act(self.requested)

    def __enter__(self) -> "StopSignals":
        # Python runs handlers in the main thread only, and only that thread may install them:
        # elsewhere (pretrain called from a thread) the signals keep their old behaviour.
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


class StopFlag:
    """Whether any rank caught a stop signal: `any_rank(requested)`, a collective under DDP (every
    rank calls it at every step boundary). The flag travels over gloo on the CPU: under NCCL a
    separate gloo group (made here, by every rank at once), so that reading it back never waits
    for the GPU's queued work (a .item() on a CUDA tensor each step would)."""

    def __init__(self):
        self.group = None
        if dist.is_distributed() and tdist.get_backend() != "gloo":
            self.group = tdist.new_group(backend="gloo")

    def any_rank(self, requested: Optional[str]) -> bool:
        if not dist.is_distributed():
            return requested is not None
        flag = torch.tensor([0 if requested is None else 1], dtype=torch.int32)
        tdist.all_reduce(flag, op=tdist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())
