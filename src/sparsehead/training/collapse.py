"""The collapse monitor (train.collapse_*): dimensional collapse seen while a run trains, from the
embeddings its steps already compute (no extra forward pass).

Every step copies r (of view 1) and z of the two global views into a window of the newest rows, a
ring buffer on the training device (copies only: no synchronisation). At each logging step the
windows of every process are gathered and the main process computes the rank measures of r and z
that `sparsehead analyze` reports (maths.spectrum.rank_measures: effective rank, RankMe, the top
eigenvalue's share) and LiDAR of z over its two views; every process receives them. Where
(train.collapse_spectra): `step` computes them at the logging step on the training device, which
waits for them; `thread` copies the window to host memory and computes them on a CPU thread
(training/collapse_worker.py) while training goes on, and every process receives them at the next
logging step (a fixed offset, so the processes agree without asking: the gather and the broadcast
are made by all of them at the same steps), logged with `collapse/step`, the step of the window they
measured; `auto` (the default) is thread on a GPU and step on the CPU. The end of a run, or a stop,
waits for the pending measures before it ends (final_logs, at_end).

The alarm, on the measures when they arrive: once the window they measured was full, the effective
rank of r or z below train.collapse_threshold x its dimension (x the window's rows when fewer)
warns, or with train.on_collapse=stop ends the run with a checkpoint (the run saves it at the step
boundary) and CollapseError. The window is not checkpointed: after a resume it fills again.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from sparsehead.config import TrainConfig
from sparsehead.core import distributed as dist
from sparsehead.core.errors import SparseheadError
from sparsehead.core.step_hook import StepHook
from sparsehead.maths.spectrum import lidar, rank_measures
from sparsehead.training.collapse_worker import SpectraJob

MEASURES = ("effective_rank", "rankme", "top_eig_share")


class CollapseError(SparseheadError, RuntimeError):
    """The collapse alarm stopped the run (train.on_collapse=stop); the message names what fell,
    the step, the checkpoint kept and the fixes."""


class EmbeddingWindow:
    """The newest `size` rows of aligned embeddings (row i of each part is the same image), in a ring."""

    def __init__(self, size: int):
        self.size, self.next, self.count = size, 0, 0
        self.rows: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def add(self, parts: dict[str, torch.Tensor]) -> None:
        n = min(len(next(iter(parts.values()))), self.size)
        start, head = self.next, min(n, self.size - self.next)  # `head` rows up to the end, the rest wrap
        for name, x in parts.items():
            x = x.detach()[-n:]
            if name not in self.rows:
                self.rows[name] = torch.empty(self.size, x.shape[1], dtype=torch.float32, device=x.device)
            self.rows[name][start : start + head] = x[:head]
            self.rows[name][: n - head] = x[head:]
        self.next = (start + n) % self.size
        self.count = min(self.count + n, self.size)

    def filled(self) -> dict[str, torch.Tensor]:
        return {name: rows[: self.count] for name, rows in self.rows.items()}


def window_measures(rows: dict[str, torch.Tensor]) -> dict[str, float]:
    """The logged measures of gathered windows {"r": ..., "z1": ..., "z2": ...} (rows with a
    non-finite value left out: a step skipped by train.nonfinite=skip must not poison them)."""
    keep = torch.stack([x.isfinite().all(dim=1) for x in rows.values()]).all(dim=0)
    if int(keep.sum()) < 2:
        return {}
    out: dict[str, float] = {"collapse/window": int(keep.sum())}
    for key, name in (("r", "r"), ("z", "z1")):
        if name in rows:
            measures = rank_measures(rows[name][keep])
            out.update({f"{key}/{m}": measures[m] for m in MEASURES})
    if "z2" in rows:
        out["z/lidar"] = lidar(torch.stack([rows["z1"][keep], rows["z2"][keep]], dim=1))
    return out


@dataclass
class Pending:
    """A window whose measures a thread is computing (train.collapse_spectra=thread)."""

    job: Optional[SpectraJob]  # on the main process (None on the others: they wait for its broadcast)
    dims: dict[str, int]  # r / z -> the most its effective rank can be in the window
    full: bool  # whether the window was full
    step: Optional[int] = None  # the logging step of the window (notes, right after logs, sets it)


class CollapseMonitor(StepHook):
    """The step hook of train.collapse_*: the measures at each logging step, then the alarm."""

    def __init__(self, train: TrainConfig, run_dir):
        self.on, self.threshold, self.action = train.collapse_monitor, train.collapse_threshold, train.on_collapse
        self.spectra, self.run_dir = train.collapse_spectra, run_dir
        self.window = EmbeddingWindow(math.ceil(train.collapse_window / dist.world_size()))  # this process's share
        self.pending: Optional[Pending] = None
        self.measures: dict[str, float] = {}  # the newest measures received, and of what window:
        self.dims: dict[str, int] = {}  # r / z -> the most its effective rank can be in that window
        self.full = False  # whether that window was full
        self.fresh = False  # measures received at this logging step: notes() judges them
        self.low: dict[str, str] = {}  # r / z -> "erank / dims" while its alarm is on
        self.stop: Optional[str] = None  # why the run must stop (train.on_collapse=stop)

    def observe(self, labels: torch.Tensor, r: Optional[torch.Tensor], z: tuple = ()) -> None:
        if self.on and r is not None:
            self.window.add({"r": r, **{f"z{i + 1}": v for i, v in enumerate(z[:2])}})

    def logs(self) -> dict[str, float]:
        """The measures received at this logging step (a collective: every process calls it at every
        logging step): of the window now (collapse_spectra=step), or of the previous logging step's
        window, named by collapse/step, while a thread starts on the window now (collapse_spectra=thread)."""
        if not self.on:
            return {}
        if self.pending is not None:
            self._collect()
        if self.window.count >= 2:
            self._start()
        return self.measures if self.fresh else {}

    def _start(self) -> None:
        """Gather the window (a collective), then measure it now or hand it to a thread."""
        rows = {name: dist.gather_no_grad(x) for name, x in self.window.filled().items()}
        dims = {
            key: min(rows[name].shape[1], len(rows[name])) for key, name in (("r", "r"), ("z", "z1")) if name in rows
        }
        full = self.window.count == self.window.size
        device = rows["r"].device.type
        if self.spectra == "thread" or (self.spectra == "auto" and device != "cpu"):
            self.pending = Pending(SpectraJob(rows, window_measures) if dist.is_main() else None, dims, full)
        else:
            self._receive(self._safely(lambda: window_measures(rows)) if dist.is_main() else None, dims, full, None)

    def _collect(self) -> None:
        """The pending window's measures, on every process (a collective: the main process waits for its
        thread; the others, which started none, for its broadcast)."""
        pending, self.pending = self.pending, None
        measures = self._safely(pending.job.result) if pending.job is not None else None
        self._receive(measures, pending.dims, pending.full, pending.step)

    def _receive(self, measures: Optional[dict], dims: dict[str, int], full: bool, step: Optional[int]) -> None:
        """The main process's `measures` of a window (of logging step `step`, None: this one) on every process."""
        measures = dist.from_main(measures)
        self.measures = {**measures, "collapse/step": step} if measures and step is not None else measures
        self.dims, self.full, self.fresh = dims, full, True

    @staticmethod
    def _safely(measure) -> dict[str, float]:
        """measure(), or no measures when they cannot be computed (an eigensolver that fails on a
        degenerate window): a monitor's failure costs its log line, never the run, and under DDP the
        other processes, waiting for these measures, receive the empty answer instead of hanging."""
        try:
            return measure()
        except (RuntimeError, ValueError, torch.linalg.LinAlgError) as err:
            warnings.warn(f"collapse monitor: no measures at this step ({type(err).__name__}: {err})")
            return {}

    def notes(self, step: int) -> dict[str, str]:
        """After a logging step: the alarm judges the measures received at it; returns the progress
        bar's note while an alarm is on ({} otherwise)."""
        if self.pending is not None and self.pending.step is None:
            self.pending.step = step
        if self.fresh:
            self.fresh = False
            self._alarm(step)
        return {"collapse": ", ".join(f"{key} erank {v}" for key, v in self.low.items())} if self.low else {}

    def _alarm(self, step: int) -> None:
        """Warn (or set `stop`) when the effective rank of r or z in a full window has fallen below the threshold."""
        low = {
            key: f"{erank:.1f}/{dims}"
            for key, dims in self.dims.items()
            if self.full
            and (erank := self.measures.get(f"{key}/effective_rank")) is not None
            and erank < self.threshold * dims
        }
        if fell := [key for key in low if key not in self.low]:
            what = ", ".join(f"{key} {low[key]}" for key in fell)
            of_step = "" if (at := self.measures.get("collapse/step")) is None else f" of step {at}"
            message = (
                f"collapse alarm at step {step}: the effective rank of {what} dimensions is below "
                f"train.collapse_threshold={self.threshold:g} of the dimension (measured on the newest "
                f"{self.measures.get('collapse/window')} embeddings{of_step}): "
                "the embedding is collapsing. Look at optim.lr, method.temperature, the predictor or sparsity.lam"
            )
            if self.action == "stop":
                self.stop = self.stop or (
                    f"{message}. Stopped (train.on_collapse=stop) with a checkpoint of step {step} in "
                    f"{self.run_dir} (`sparsehead analyze {self.run_dir}` shows its spectra); "
                    "train.on_collapse=warn only warns, train.collapse_threshold=0 turns the alarm off"
                )
            elif dist.is_main():
                warnings.warn(f"{message}; train.on_collapse=stop stops such runs")
        self.low = low

    def stop_reason(self, step: int) -> Optional[str]:
        return "the collapse alarm" if self.stop else None

    def final_logs(self, step: int) -> dict[str, float]:
        """After the last step (or a stop), before its checkpoint: the measures of the window still
        pending, judged by the alarm (a collective: every process calls it). A run that ends waits for
        its thread: nothing is lost and no thread outlives the run."""
        if self.pending is None:
            return {}
        self._collect()
        self.fresh = False
        self._alarm(step)
        return self.measures

    def at_end(self, step: int, finished: bool) -> None:
        self.final_logs(step)  # where the run did not ask for them before its checkpoint
        if self.stop:  # train.on_collapse=stop: the checkpoint of this step is saved
            raise CollapseError(self.stop)
