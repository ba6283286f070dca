"""The collapse monitor (train.collapse_*): dimensional collapse seen while a run trains, from the
embeddings its steps already compute (no extra forward pass).

Every step copies r (of view 1) and z of the two global views into a window of the newest rows, a
ring buffer on the training device (copies only: no synchronisation). At each logging step the
windows of every process are gathered, the main process computes the rank measures of r and z that
`sparsehead analyze` reports (maths.spectrum.rank_measures: effective rank, RankMe, the top
eigenvalue's share) and LiDAR of z over its two views, and every process receives them. The
alarm: once the window is full, the effective rank of r or z below train.collapse_threshold x its
dimension (x the window's rows when fewer) warns, or with train.on_collapse=stop ends the run with
a checkpoint (the run saves it at the step boundary) and CollapseError. The window is not checkpointed: after a resume
it fills again.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch

from sparsehead.config import TrainConfig
from sparsehead.core import distributed as dist
from sparsehead.core.errors import SparseheadError
from sparsehead.core.step_hook import StepHook
from sparsehead.maths.spectrum import lidar, rank_measures

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


class CollapseMonitor(StepHook):
    """The step hook of train.collapse_*: the measures at each logging step, then the alarm."""

    def __init__(self, train: TrainConfig, run_dir):
        self.on, self.threshold, self.action = train.collapse_monitor, train.collapse_threshold, train.on_collapse
        self.run_dir = run_dir
        self.window = EmbeddingWindow(math.ceil(train.collapse_window / dist.world_size()))  # this process's share
        self.measures: dict[str, float] = {}
        self.dims: dict[str, int] = {}  # r / z -> the most its effective rank can be in the window
        self.low: dict[str, str] = {}  # r / z -> "erank / dims" while its alarm is on
        self.stop: Optional[str] = None  # why the run must stop (train.on_collapse=stop)

    def observe(self, labels: torch.Tensor, r: Optional[torch.Tensor], z: tuple = ()) -> None:
        if self.on and r is not None:
            self.window.add({"r": r, **{f"z{i + 1}": v for i, v in enumerate(z[:2])}})

    def logs(self) -> dict[str, float]:
        """The measures of the window (a collective: every process calls it at a logging step)."""
        if not self.on or self.window.count < 2:
            return {}
        rows = {name: dist.gather_no_grad(x) for name, x in self.window.filled().items()}
        self.measures = dist.from_main(self._measures(rows) if dist.is_main() else None)
        self.dims = {
            key: min(rows[name].shape[1], len(rows[name])) for key, name in (("r", "r"), ("z", "z1")) if name in rows
        }
        return self.measures

    def _measures(self, rows: dict[str, torch.Tensor]) -> dict[str, float]:
        """The window's measures, or none when they cannot be computed (an eigensolver that fails on a
        degenerate window): a monitor's failure costs its log line, never the run, and under DDP the
        other processes, waiting for these measures, receive the empty answer instead of hanging."""
        try:
            return window_measures(rows)
        except (RuntimeError, ValueError, torch.linalg.LinAlgError) as err:
            warnings.warn(f"collapse monitor: no measures at this step ({type(err).__name__}: {err})")
            return {}

    def notes(self, step: int) -> dict[str, str]:
        """After a logging step: warn (or set `stop`) when the effective rank of r or z has fallen
        below the threshold; returns the progress bar's note while it is low ({} otherwise)."""
        full = self.window.count == self.window.size
        low = {
            key: f"{erank:.1f}/{dims}"
            for key, dims in self.dims.items()
            if full
            and (erank := self.measures.get(f"{key}/effective_rank")) is not None
            and erank < self.threshold * dims
        }
        if fell := [key for key in low if key not in self.low]:
            what = ", ".join(f"{key} {low[key]}" for key in fell)
            message = (
                f"collapse alarm at step {step}: the effective rank of {what} dimensions is below "
                f"train.collapse_threshold={self.threshold:g} of the dimension (measured on the newest "
                f"{self.measures.get('collapse/window')} embeddings): the embedding is collapsing. Look at "
                "optim.lr, method.temperature, the predictor or sparsity.lam"
            )
            if self.action == "stop":
                self.stop = (
                    f"{message}. Stopped (train.on_collapse=stop) with a checkpoint of step {step} in "
                    f"{self.run_dir} (`sparsehead analyze {self.run_dir}` shows its spectra); "
                    "train.on_collapse=warn only warns, train.collapse_threshold=0 turns the alarm off"
                )
            elif dist.is_main():
                warnings.warn(f"{message}; train.on_collapse=stop stops such runs")
        self.low = low
        return {"collapse": ", ".join(f"{key} erank {v}" for key, v in low.items())} if low else {}

    def stop_reason(self, step: int) -> Optional[str]:
        return "the collapse alarm" if self.stop else None

    def at_end(self, step: int, finished: bool) -> None:
        if self.stop:  # train.on_collapse=stop: the checkpoint of this step is saved
            raise CollapseError(self.stop)
