"""The saved progress of a classifier an evaluation trains (the SGD linear probe, semi-supervised
fine-tuning), so that a killed or pre-empted evaluation continues exactly where it stopped.

The progress file is written atomically at the end of every epoch and when a stop signal
(SIGTERM, SIGUSR1, the first Ctrl-C) arrives, which ends the command with exit status 75;
running the same command again continues from it, bitwise as if never stopped. The protocol removes
it once the test set is scored (semi-supervised: once every fraction is), so a stop while scoring, or
in a later fraction, never trains a finished classifier again. Under DDP the first process reads
it and every process receives the same answer. The file names its job by a key (the checkpoint, the data, the options):
another job never reads it.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from sparsehead.core import distributed as dist
from sparsehead.core.atomic import atomic_write
from sparsehead.core.errors import Interrupted, SparseheadError
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.runs.checkpoint import nbytes

STOP_SIGNALS = ["SIGTERM", "SIGUSR1", "SIGINT"]


@dataclass
class ClassifierState:
    """Everything a classifier's training changes: the weights (the backbone's only when it is
    fine-tuned), the optimiser and schedule, the augmentation and batch-order generators."""

    backbone: nn.Module
    classifier: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    augment_rng: torch.Generator
    order_rng: torch.Generator
    fine_tuned: bool

    def state_dict(self) -> dict:
        """A collective under DDP: every process's augmentation generator is gathered."""
        return {
            "classifier": self.classifier.state_dict(),
            **({"backbone": self.backbone.state_dict()} if self.fine_tuned else {}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "augment_rng": dist.from_every_rank(self.augment_rng.get_state()),  # one per process
        }

    def load_state_dict(self, state: dict) -> None:
        self.classifier.load_state_dict(state["classifier"])
        if self.fine_tuned:
            self.backbone.load_state_dict(state["backbone"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if len(state["augment_rng"]) != dist.world_size():
            raise EvaluationError(
                f"the saved progress was made by {len(state['augment_rng'])} process(es), this evaluation runs "
                f"{dist.world_size()}; continue it with as many, or delete the progress file to start over"
            )
        self.augment_rng.set_state(state["augment_rng"][dist.rank()])


class Progress:
    """The progress file of one job (`key`) at `path`."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = Path(path), key

    def restore(self, state: ClassifierState) -> tuple[int, int]:
        """Load the saved progress into `state`: the (epoch, batch) to continue from, (0, 0) when none.
        A collective under DDP: the first process reads the file, every process gets its answer."""
        saved = dist.from_main(self._read() if dist.is_main() else None)
        if isinstance(saved, str):  # the one error every process raises
            raise EvaluationError(saved)
        if saved is None:
            return 0, 0
        try:
            state.load_state_dict(saved["state"])
            # The batch order is redrawn from the generator as it was when the epoch began.
            state.order_rng.set_state(saved["order_rng_at_epoch_start"])
            epoch, batch = int(saved["epoch"]), int(saved["batch"])
        except SparseheadError:
            raise
        except Exception as err:  # whatever a damaged file makes the state raise
            raise EvaluationError(self._unusable(err)) from None
        if dist.is_main():
            print(f"continuing from {self.path.name}: epoch {epoch + 1}, batch {batch}", file=sys.stderr)
        return epoch, batch

    def _read(self):
        """The saved progress of this job, None (no file, or another job's), or why it cannot be used."""
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if saved["key"] != self.key:
                warnings.warn(
                    f"{self.path} is the progress of another evaluation; starting this one from the beginning"
                )
                return None
            return saved
        except Exception as err:  # whatever a damaged file makes the loader raise
            return self._unusable(err)

    def _unusable(self, err: Exception) -> str:
        detail = f"{type(err).__name__}: {' '.join(str(err).split('. ')[0].split())[:150]}"
        if isinstance(err, OSError) and err.errno is not None:  # the storage, not the file
            return f"cannot read the evaluation progress {self.path} ({detail}); check the storage"
        return (
            f"the evaluation progress {self.path} is damaged ({detail}); delete it to start this evaluation "
            "from the beginning"
        )

    def save(self, state: ClassifierState, epoch: int, batch: int, order_rng_at_epoch_start: torch.Tensor) -> None:
        """Continue at `batch` of `epoch` (0-based) next time. A collective under DDP: every process
        calls it, the first one writes."""
        blob = {
            "key": self.key,
            "epoch": epoch,
            "batch": batch,
            "order_rng_at_epoch_start": order_rng_at_epoch_start,
            "state": state.state_dict(),
        }
        if dist.is_main():
            atomic_write(self.path, lambda f: torch.save(blob, f), needed=nbytes(blob))

    def interrupted(self, signal_name: str, epoch: int, epochs: int) -> Interrupted:
        return Interrupted(
            f"stopped by {signal_name} in epoch {epoch + 1} of {epochs}, progress saved in {self.path}; "
            "run the same command again to continue"
        )

    def finish(self) -> None:
        if dist.is_main():
            self.path.unlink(missing_ok=True)
