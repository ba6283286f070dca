"""The collapse monitor's spectra off the training stream (train.collapse_spectra=thread).

At a logging step the gathered window is copied to host memory (on a GPU a non-blocking copy into
pinned memory, ordered after the step's work by an event: the training stream does not wait), and
one CPU thread computes its measures in float64 while training goes on. The job is collected (its
thread joined) at the next logging step or at the run's end. A CPU's float64 eigensolve runs at its
full rate and shares nothing with the training stream; on a GPU it would take the training's SMs,
run float64 at a fraction of the float32 rate on most cards, and cuSOLVER's eigensolvers synchronise.
The thread draws no random numbers and writes nothing the training reads.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

import torch

THREAD_NAME = "sparsehead-collapse-spectra"


def host_copies(rows: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Optional[torch.cuda.Event]]:
    """Copies of `rows` in host memory that the training may overwrite the originals of, and the event
    they are complete at (None: copied already, on the CPU)."""
    device = next(iter(rows.values())).device
    if device.type != "cuda":
        return {name: x.clone() for name, x in rows.items()}, None
    with torch.cuda.device(device):
        copies = {
            name: torch.empty(x.shape, dtype=x.dtype, pin_memory=True).copy_(x, non_blocking=True)
            for name, x in rows.items()
        }
        ready = torch.cuda.Event()
        ready.record()  # on the training stream, after the copies
    return copies, ready


class SpectraJob:
    """measure(rows) on host copies of `rows`, in a thread of its own, started at once; result() waits."""

    def __init__(self, rows: dict[str, torch.Tensor], measure: Callable[[dict[str, torch.Tensor]], dict]):
        copies, ready = host_copies(rows)
        self._result: dict = {}
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(measure, copies, ready), name=THREAD_NAME)
        self._thread.start()

    def _run(self, measure, copies: dict[str, torch.Tensor], ready: Optional[torch.cuda.Event]) -> None:
        try:
            if ready is not None:
                ready.synchronize()  # this thread waits for the copies, the training stream does not
            self._result = measure(copies)
        except BaseException as err:  # handed to the training thread by result(), which decides
            self._error = err

    def result(self) -> dict:
        """The measures, once the thread has ended (it is joined here); its exception raised again here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result
