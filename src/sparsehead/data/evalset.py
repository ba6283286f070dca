"""What evaluation and analysis read of a data set, in memory (datasets.ImageSet) or streamed
(stream.StreamSet) alike: labels, classes, file names (of file sources), channel statistics, its
length and shape, a fingerprint, and its evaluation images batch by batch.

Evaluation images are each image's centre crop at the run's image size S, uint8 (n, C, S, S), the
shorter side resized to S / crop_ratio first (settings.crop_ratio_of), in the order asked:
`eval_batches(batch_size, indices)` for consecutive chunks of `indices` (all images by default),
`eval_plan(plan)` for one batch per given list of indices. Only a batch at a
time is ever decoded (a streamed set's in DataLoader workers, data.workers of them), so the memory
a pass takes does not grow with the data set. No code outside data/ needs to know which kind of
set it holds.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Protocol, Sequence

import torch

EVAL_BATCH = 512


class EvalSet(Protocol):
    labels: torch.Tensor  # int64 (N,); -1 where unlabeled
    classes: list[str]
    skipped: int  # unreadable files left out (data.bad_images=skip)
    names: Optional[list[str]]  # each image's file relative to the split's folder; None: not from files
    crop_ratio: float  # its centre crops: the shorter side resized to S / crop_ratio, the centre S x S

    def __len__(self) -> int: ...

    @property
    def item_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one evaluation image."""
        ...

    def channel_stats(self) -> tuple[list[float], list[float]]: ...

    def fingerprint(self) -> str:
        """A short hash, equal only for the same images (and labels) in the same order."""
        ...

    def eval_plan(self, plan: Iterable[Sequence[int]]) -> Iterator[torch.Tensor]: ...

    def eval_batches(self, batch_size: int = EVAL_BATCH, indices=None) -> Iterator[torch.Tensor]: ...


def chunks(length: int, batch_size: int, indices: Optional[Sequence[int]] = None) -> list[list[int]]:
    """Consecutive lists of at most `batch_size` of `indices` (default: 0 .. length - 1)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    order = list(range(length)) if indices is None else [int(i) for i in indices]
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


class EvalBatches:
    """eval_batches() from a set's eval_plan(): the one way both kinds of set cut their batches."""

    def eval_batches(self, batch_size: int = EVAL_BATCH, indices=None) -> Iterator[torch.Tensor]:
        return self.eval_plan(chunks(len(self), batch_size, indices))
