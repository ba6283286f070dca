"""Run: everything a pretraining run built once (training/setup.py makes it) and what it does
between steps: its batches, a log line, a checkpoint, its teardown."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional

import torch
from tqdm import tqdm

from sparsehead import config
from sparsehead.config import Config
from sparsehead.core import distributed as dist
from sparsehead.core.step_hook import StepHook
from sparsehead.data.views import ViewGenerator
from sparsehead.runs import checkpoint
from sparsehead.runs.folder import SCHEMA
from sparsehead.runs.metrics_log import MetricLogger
from sparsehead.training import resume
from sparsehead.training.hooks import gathered
from sparsehead.training.state import TrainState


class StepOutput(NamedTuple):
    """What one training step leaves for the log line (tensors on the device: read only when logged)."""

    loss: torch.Tensor  # the method's loss, detached
    penalty: torch.Tensor  # the hooks' terms added to it (SparseHead's L2,1 penalty)
    logs: dict  # the method's own values


@dataclass
class Run:
    cfg: Config
    run_dir: Path
    device: torch.device
    precision: str  # core.precision: fp32, bf16 or fp16
    data: object  # the training set (data.datasets.ImageSet in memory, data.stream.StreamSet streamed)
    views: ViewGenerator
    feed: object  # data.feed: `epoch(epoch, first_batch)` yields (images, labels)
    method: torch.nn.Module  # methods.Method: weights, loss, after-step work
    model: Optional[torch.nn.Module]  # the method as the step calls it (DDP, compiled); None once released
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler  # a no-op unless fp16
    hooks: list[StepHook]
    state: TrainState
    logger: MetricLogger
    bar: tqdm
    steps_per_epoch: int
    last_step: int  # train.epochs x steps_per_epoch, or train.max_steps when sooner
    channel_stats: tuple[list[float], list[float]]
    closers: list[Callable[[], None]] = field(default_factory=list)  # teardown, called newest first
    saved_at: Optional[int] = None  # the step of the last checkpoint this process wrote

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) from the step the run stands at (0, or where it resumed) to the last step."""
        while self.state.step < self.last_step:
            epoch, first_batch = divmod(self.state.step, self.steps_per_epoch)
            self.method.set_epoch(epoch)
            for batch in self.feed.epoch(epoch, first_batch):
                yield batch
                if self.state.step >= self.last_step:
                    return

    def log(self, out: StepOutput) -> None:
        """The log line of the step just taken (collectives: every process calls it)."""
        step = self.state.step
        record = {
            "step": step,
            "epoch": step / self.steps_per_epoch,
            "loss": dist.mean_over_ranks(out.loss).item(),
            "penalty": out.penalty.item(),
            "lr": self.scheduler.get_last_lr()[0],
            **out.logs,
            **gathered(self.hooks, lambda h: h.logs()),
        }
        self.logger.log(record)
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", **gathered(self.hooks, lambda h: h.notes(step)))

    def log_epoch_end(self) -> None:
        """The evaluations due when the step just taken closes an epoch (not at the last step: finish has them)."""
        step = self.state.step
        if step < self.last_step and (
            due := gathered(self.hooks, lambda h: h.end_of_epoch(step, self.steps_per_epoch))
        ):
            self.logger.log({"step": step, "epoch": step / self.steps_per_epoch, **due})

    def save_checkpoint(self) -> None:
        """The whole training state of this step (a collective: every process calls it; the first writes)."""
        step = self.state.step
        for hook in self.hooks:
            hook.before_checkpoint(step)
        entries = self.state.state_dict()
        if dist.is_main():
            mean, std = self.channel_stats
            checkpoint.save(
                self.run_dir,
                {
                    **entries,
                    "epoch": step // self.steps_per_epoch,
                    "data_position": resume.data_position(step, self.steps_per_epoch, len(self.data)),
                    "config": config.to_dict(self.cfg),
                    "schema": SCHEMA,
                    "data_mean": mean,
                    "data_std": std,
                },
                step,
                keep=self.cfg.train.keep_checkpoints,
            )
        self.saved_at = step

    def release_model(self) -> None:
        """Drop the DDP wrapper while the process group lives: its Reducer holds the group, and freed
        after the group is destroyed its destructor waits on gloo's thread forever (torch 2.11)."""
        self.model = None
        gc.collect()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        self.release_model()
        self.logger.close()
        for close in reversed(self.closers):  # the run folder's lock, then the signal handlers
            close()
        dist.cleanup()
