"""`sparsehead evaluate`: one protocol on a trained checkpoint, its numbers saved in the run folder.

The runner loads the checkpoint and the data, checks the inputs every protocol shares (options
against their declarations, checkpoint, image size and channels, labels), lets the protocol
(knn.py, ncc.py, linear.py, semisup.py) check its own and run, and writes the record atomically to
run_dir/eval/<result name>.json: the protocol's name (or recipe), with the checkpoint's name
appended for an older checkpoint and @<source>-<key> for another data set. Frozen features are
extracted once per checkpoint and data set and cached in run_dir/features/.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from sparsehead import config
from sparsehead.core import distributed as dist
from sparsehead.core import options
from sparsehead.core.atomic import check_writable
from sparsehead.data import datasets
from sparsehead.data.evalset import EvalSet
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.evaluate.features import fingerprint
from sparsehead.evaluate.options import EvalOptions
from sparsehead.evaluate.protocol import Protocol
from sparsehead.evaluate.registry import PROTOCOLS
from sparsehead.runs import checkpoint
from sparsehead.runs.folder import RunDir
from sparsehead.runs.model import TrainedRun, load_trained, resolve_device


def evaluate(
    target: str | Path, opts: EvalOptions, data_overrides: tuple[str, ...] = ()
) -> tuple[dict, Optional[Path]]:
    """Run `opts.protocol` on the checkpoint (or newest checkpoint of the run folder) `target`.

    `data_overrides` (data.key=value) evaluate on another data set than the run's. Returns the
    saved record and its path (None on the processes other than the first under torchrun, where
    the protocols that train spread their work over the processes and the first writes the record)."""
    check_options(opts)
    protocol = PROTOCOLS.lookup(opts.protocol)
    start = time.perf_counter()
    device = resolve_device(opts.device)
    dist.setup(device)
    try:
        return _evaluate(target, opts, data_overrides, protocol, device, start)
    finally:
        dist.cleanup()


def _evaluate(
    target: str | Path,
    opts: EvalOptions,
    data_overrides: tuple[str, ...],
    protocol: Protocol,
    device: torch.device,
    start: float,
) -> tuple[dict, Optional[Path]]:
    trained = load_trained(target, device)
    if dist.is_main():  # a run folder that cannot take the record is refused before the work, not after it
        check_writable(RunDir(trained.run_dir).eval_path(opts.protocol).parent)
    data_cfg = config.with_data_overrides(trained.cfg, data_overrides).data
    train, test = datasets.load(data_cfg, "train"), datasets.load(data_cfg, "test")
    check_data(trained, data_cfg, train, test, opts.resize)
    protocol.check_training_set(opts, train)

    results = protocol.run(trained, train, test, opts, device)
    data_key = hashlib.sha256((fingerprint(train) + fingerprint(test)).encode()).hexdigest()[:12]
    record = {
        "protocol": opts.protocol,
        "checkpoint": str(trained.checkpoint_path),
        "step": trained.state.get("step"),
        "data": {
            **{k: getattr(data_cfg, k) for k in ("source", "root", "image_size", "subset")},
            "train_images": len(train),
            "test_images": len(test),
            "eval_crop": test.crop_ratio,  # the shorter side resized to image_size / eval_crop, centre-cropped
            "key": data_key,
        },
        "options": protocol.settings(opts),
        **results,
        "device": str(device),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if not dist.is_main():
        return record, None
    path = RunDir(trained.run_dir).write_eval(result_name(trained, opts, data_cfg, data_key, data_overrides), record)
    return record, path


def result_name(trained: TrainedRun, opts: EvalOptions, data_cfg, data_key: str, data_overrides) -> str:
    """The protocol's result name for the run's newest checkpoint on its own data; otherwise the
    checkpoint and/or the data set are named, so the run's headline result is never overwritten."""
    name = PROTOCOLS.lookup(opts.protocol).result_name(opts)
    newest = checkpoint.list_checkpoints(trained.run_dir)
    if not newest or newest[-1].resolve() != trained.checkpoint_path.resolve():
        name += f"-{trained.checkpoint_path.stem}"
    if data_overrides:
        name += f"@{data_cfg.source}-{data_key[:8]}"
    return name


# --- checks of the shared inputs, all before any work -------------------------------------------


def check_options(opts: EvalOptions) -> None:
    """Every option against its declaration, then what involves several of them."""
    options.check(opts, key=options.flag_of)
    protocol = PROTOCOLS.lookup(opts.protocol)
    if opts.with_z and not protocol.uses_frozen_features(opts):
        raise EvaluationError(
            "--with-z applies to the frozen-feature protocols (knn, ncc, linear with "
            "--linear-recipe lbfgs); semisup and the SGD recipes train the backbone's r"
        )


def input_channels(backbone: nn.Module) -> int:
    return next(m for m in backbone.modules() if isinstance(m, nn.Conv2d)).in_channels


def check_data(trained: TrainedRun, data_cfg: config.DataConfig, train: EvalSet, test: EvalSet, resize: bool) -> None:
    """The images must be what the checkpoint was trained on: channels, and size unless resize."""
    size = trained.cfg.data.image_size
    channels = input_channels(trained.method.backbone)
    if data_cfg.image_size != size and not resize:
        raise EvaluationError(
            f"data.image_size={data_cfg.image_size}, but {trained.checkpoint_path.name} was trained on "
            f"{size}x{size} images; drop the override, or pass --resize to resize the images to {size}x{size}"
        )
    for split, data in (("train", train), ("test", test)):
        c, h, w = data.item_shape
        if c != channels:
            raise EvaluationError(
                f"the {split} images have {c} channel(s), but the checkpoint's backbone "
                f"takes {channels}; evaluate it on {channels}-channel images"
            )
        # The run's own source at its native size is what pretraining saw (e.g. 8x8 digits at 16).
        if (h, w) != (size, size) and data_cfg.source != trained.cfg.data.source and not resize:
            raise EvaluationError(
                f"the {split} images of data.source={data_cfg.source} are {h}x{w}, but the checkpoint was "
                f"trained on {size}x{size} images; use a data set of that size, or pass --resize"
            )
        if (data.labels < 0).any():
            raise EvaluationError(
                f"the {split} split has unlabeled images; evaluation needs labels on both train and test"
            )
    if len(train) == 0 or len(test) == 0:
        raise EvaluationError("the train or test split is empty")
