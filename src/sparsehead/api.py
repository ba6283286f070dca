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
    """Pretrain as `config` says, into `run_dir`, and return the run folder.

    Args:
        config: a shipped config's name (`sparsehead configs` lists them), a YAML file's path, or a
            `sparsehead.config.Config`.
        run_dir: the run folder (default: `train.out_dir/train.run_name`); one that holds a checkpoint of the
            same config is resumed.
        **overrides: settings as `"section.key"` keys, e.g. `**{"sparsity.lam": 1e-4}`: the command line's
            `key=value` overrides, with the same validation.

    Returns:
        The run folder: `config.yaml` (the resolved config), `metrics.jsonl`, `checkpoints/`, `results.json`.

    Raises:
        ConfigError: an unknown key, a wrong type, an out-of-range value or a missing data folder, before
            any work starts.

    Examples:
        Three steps of the demo (SimCLR + SparseHead on scikit-learn's digits, no download):

        >>> import sparsehead, sparsehead.config
        >>> run = sparsehead.pretrain("demo", run_dir="runs/demo", **{"train.max_steps": 3, "sparsity.lam": 1e-3})
        >>> run.name, sparsehead.config.load(run / "config.yaml").sparsity.lam
        ('demo', 0.001)
        >>> sparsehead.pretrain("demo", **{"train.max_steps": 0})
        Traceback (most recent call last):
        ...
        sparsehead.core.errors.ConfigError: train.max_steps: 0 is out of range; it must be >= 1 (a positive integer)
    """
    texts = _overrides(overrides)
    if isinstance(config, configuration.Config):
        cfg = configuration.from_dict(configuration.merge(configuration.to_dict(config), texts))
    else:
        cfg = configuration.load(config, texts)
    from sparsehead.training import loop

    summary = loop.pretrain(cfg, run_dir)
    return Path(summary.get("run_dir", run_dir))


def evaluate(run: str | os.PathLike, protocol: str = "knn", data: dict | None = None, **options) -> dict:
    """Evaluate a run's backbone with `protocol`, and return the record also written to
    `RUN/eval/<protocol>.json`.

    Args:
        run: a run folder (its newest checkpoint is evaluated) or a checkpoint file.
        protocol: `knn`, `linear`, `semisup` or `ncc`.
        data: keys of the data section, to evaluate on another data set than the run's
            (`{"source": "imagefolder", "root": "data/cifar10"}`).
        **options: the options of `sparsehead evaluate` by field name (`with_z=True`, `epochs=5`).

    Returns:
        The accuracies of the representation r under `"r"` (and of the embedding z under `"z"` with
            `with_z=True`), with the checkpoint, step, data, options and device they were measured with.

    Raises:
        ConfigError: an unknown option or a wrong value, before any work starts.

    Examples:
        >>> import sparsehead
        >>> run = sparsehead.pretrain("demo", run_dir="runs/demo", **{"train.max_steps": 3})
        >>> record = sparsehead.evaluate(run, protocol="knn")
        >>> record["protocol"], 0.0 <= record["r"]["top1"] <= 1.0
        ('knn', True)
    """
    from sparsehead.evaluate.options import eval_options
    from sparsehead.evaluate.runner import evaluate as run_protocol

    cls = eval_options()
    declared.check_known_keys(options, [f for f in declared.field_names(cls) if f != "protocol"])
    opts = declared.from_arguments(cls, argparse.Namespace(), protocol=protocol, **options)
    record, _ = run_protocol(run, opts, tuple(_overrides(data or {})))
    return record


def load_backbone(run: str | os.PathLike) -> torch.nn.Module:
    """The trained backbone of a run, ready for downstream use: in eval mode on the CPU, with the run's
    normalisation in front.

    Args:
        run: a run folder (its newest checkpoint) or a checkpoint file.

    Returns:
        A module that takes images with values in [0, 1], shape (N, 3, H, W) at the run's
            `data.image_size`, and returns their representation r, shape (N, dim).

    Examples:
        >>> import sparsehead, torch
        >>> run = sparsehead.pretrain("demo", run_dir="runs/demo", **{"train.max_steps": 3})
        >>> backbone = sparsehead.load_backbone(run)
        >>> with torch.no_grad():
        ...     r = backbone(torch.rand(8, 3, 16, 16))  # 8 images at the demo's 16 x 16 pixels
        >>> r.shape[0]
        8
    """
    from torchvision.transforms import v2

    from sparsehead.runs.model import load_trained

    trained = load_trained(run)
    mean, std = trained.views.mean.flatten().tolist(), trained.views.std.flatten().tolist()
    return torch.nn.Sequential(v2.Normalize(mean, std), trained.method.backbone).eval()
