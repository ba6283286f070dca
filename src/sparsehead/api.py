"""The Python API: pretrain, evaluate and load a backbone from code, through the same library calls as the
`sparsehead` command, so the same validation and the same errors (sparsehead.core.errors) apply.

    >>> import sparsehead, torch
    >>> run = sparsehead.pretrain("demo", run_dir=tmp / "r", **{"train.max_steps": 3, "train.progress": False})
    >>> run.name
    'r'
    >>> "r" in sparsehead.evaluate(run, protocol="knn")  # the k-NN accuracy of the representation r
    True
    >>> backbone = sparsehead.load_backbone(run)  # images with values in [0, 1] in, r out
    >>> backbone(torch.rand(2, 3, 16, 16)).shape[0]
    2
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from sparsehead import config as configuration
from sparsehead.core import options as declared


def _overrides(overrides: dict) -> list[str]:
    """`{"train.max_steps": 3}` as the CLI's `train.max_steps=3` (JSON is YAML, so values keep their type)."""
    return [f"{key}={json.dumps(str(v) if isinstance(v, os.PathLike) else v)}" for key, v in overrides.items()]


def pretrain(config: str | os.PathLike | configuration.Config, run_dir: str | os.PathLike | None = None, **overrides):
    """Pretrain as `config` says (a shipped config's name, a YAML path or a Config), with `overrides` as
    "section.key" keys (`**{"sparsity.lam": 1e-4}`), into `run_dir` (default: train.out_dir/train.run_name;
    resumed when it holds a checkpoint of the same config). Returns the run folder."""
    texts = _overrides(overrides)
    if isinstance(config, configuration.Config):
        cfg = configuration.from_dict(configuration.merge(configuration.to_dict(config), texts))
    else:
        cfg = configuration.load(config, texts)
    from sparsehead.training import loop

    summary = loop.pretrain(cfg, run_dir)
    return Path(summary.get("run_dir", run_dir))


def evaluate(run: str | os.PathLike, protocol: str = "knn", data: dict | None = None, **options) -> dict:
    """Evaluate a run folder (its newest checkpoint) or a checkpoint file with `protocol` (knn, linear,
    semisup, ncc); `options` are the options of `sparsehead evaluate` by field name (`with_z=True`,
    `epochs=5`), `data` keys of the data section to evaluate on another data set. Returns the record
    also written to RUN/eval/<protocol>.json."""
    from sparsehead.evaluate.options import eval_options
    from sparsehead.evaluate.runner import evaluate as run_protocol

    cls = eval_options()
    declared.check_known_keys(options, [f for f in declared.field_names(cls) if f != "protocol"])
    opts = declared.from_arguments(cls, argparse.Namespace(), protocol=protocol, **options)
    record, _ = run_protocol(run, opts, tuple(_overrides(data or {})))
    return record


def load_backbone(run: str | os.PathLike) -> torch.nn.Module:
    """The trained backbone of a run folder (its newest checkpoint) or a checkpoint file, in eval mode on the
    CPU, with the run's normalisation in front: it takes images with values in [0, 1] (N, 3, H, W) at the
    run's data.image_size and returns the representation r."""
    from torchvision.transforms import v2

    from sparsehead.runs.model import load_trained

    trained = load_trained(run)
    mean, std = trained.views.mean.flatten().tolist(), trained.views.std.flatten().tolist()
    return torch.nn.Sequential(v2.Normalize(mean, std), trained.method.backbone).eval()
