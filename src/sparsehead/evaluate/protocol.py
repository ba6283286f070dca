"""What every evaluation protocol declares, and the frozen features most of them read.

A protocol is one object (registered in PROTOCOLS, registry.py) that owns its options
(a dataclass of the options only it reads, declared with core.options.opt), its checks, the name
of its result file (run_dir/eval/<name>.json) and its body. The runner only dispatches to it.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Optional

import torch

from sparsehead.data.evalset import EvalSet
from sparsehead.evaluate.features import cached_extract
from sparsehead.runs.folder import RunDir
from sparsehead.runs.model import TrainedRun


class AssembledOptions:
    """What a protocol's `opts` is: the one dataclass of `sparsehead evaluate`'s options that
    options.eval_options() assembles (a subclass of this one) from the shared options and the options
    of every protocol registered then; a protocol reads its own, the sets it names and the shared ones."""


class Protocol(abc.ABC):
    """One evaluation protocol. `opts` is always the whole AssembledOptions (options.py), of
    which a protocol reads its own options, the option sets it names and the shared ones."""

    name: str  # its --protocol value and, by default, its result file
    summary: ClassVar[str]  # its line in `sparsehead evaluate --help`
    Options: ClassVar[Optional[type]] = None  # the dataclass of the options only it reads
    shared_options: ClassVar[tuple[type, ...]] = ()  # option sets it reads that others read too

    def uses_frozen_features(self, opts: AssembledOptions) -> bool:
        """Whether it evaluates frozen features (so --with-z, the embedding z, applies)."""
        return True

    def check_training_set(self, opts: AssembledOptions, train: EvalSet) -> None:
        """Raise EvaluationError for options that cannot work on this training set."""

    def result_name(self, opts: AssembledOptions) -> str:
        """The result file's name under run_dir/eval/ for the run's newest checkpoint and data."""
        return self.name

    @abc.abstractmethod
    def settings(self, opts: AssembledOptions) -> dict:
        """The settings that produced the numbers, defaults resolved, for the saved record."""

    @abc.abstractmethod
    def run(
        self, trained: TrainedRun, train: EvalSet, test: EvalSet, opts: AssembledOptions, device: torch.device
    ) -> dict:
        """{"r": numbers[, "z": numbers]} on the checkpoint's backbone (and head)."""


def frozen_features(
    trained: TrainedRun, train: EvalSet, test: EvalSet, device, with_z: bool
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"r": (train, test)} and, with_z, {"z": ...}: cached per checkpoint and data set."""
    cache = RunDir(trained.run_dir).features_dir

    def extract(data: EvalSet, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return cached_extract(trained.method, data, trained.views, device, trained.checkpoint_path, cache, split)

    (r_tr, z_tr), (r_te, z_te) = extract(train, "train"), extract(test, "test")
    return {"r": (r_tr, r_te), **({"z": (z_tr, z_te)} if with_z else {})}
