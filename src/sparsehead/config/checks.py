"""The checks of a config that involve several sections or the file system, made before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from sparsehead.config.sections import Config
from sparsehead.core.errors import ConfigError
from sparsehead.data.augment import inactive_ops_problem
from sparsehead.data.sources import SOURCES
from sparsehead.methods import METHODS
from sparsehead.models.backbones import backbone_info
from sparsehead.models.heads import HEADS
from sparsehead.sparsity import head_problem


def validate(cfg: Config, check_paths: bool = True) -> None:
    """Checks that involve several keys or the file system."""
    d = cfg.data
    reader = SOURCES[d.source].reader  # the embedded set (sklearn) needs no folder
    if reader != "sklearn" and not d.root:
        raise ConfigError(
            f"data.root: required for data.source={d.source}; give the data folder, "
            "e.g. data.root=../shared/data/cifar10"
        )
    if check_paths and d.root and reader != "sklearn":
        root = Path(d.root).expanduser()
        downloadable = reader == "torchvision"
        if not root.exists() and not (d.download and downloadable):
            hint = " or set data.download=true" if downloadable else ""
            raise ConfigError(f"data.root: folder {root} does not exist; give an existing folder{hint}")
    backbone_info(cfg.model, cfg.data.image_size)  # a timm model: created on the meta device, its checks
    if cfg.augment.crop_scale_min > cfg.augment.crop_scale_max:
        raise ConfigError("augment.crop_scale_min: must not exceed augment.crop_scale_max")
    if cfg.augment.local_scale_min > cfg.augment.local_scale_max:
        raise ConfigError("augment.local_scale_min: must not exceed augment.local_scale_max")
    if cfg.augment.local_size > d.image_size:
        raise ConfigError(
            f"augment.local_size: {cfg.augment.local_size} exceeds data.image_size={d.image_size}; "
            f"local crops are smaller than the global ones, e.g. augment.local_size=0 (auto)"
        )
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"train.device: {dev!r} is not allowed; choose auto, cpu, cuda or cuda:N")
    if cfg.optim.name == "lars" and cfg.optim.weight_decay_filter == "enabled":
        raise ConfigError(
            "optim.weight_decay_filter: enabled is not for optim.name=lars, which keeps its own rule (no "
            "weight decay or trust ratio on 1-d parameters: norm layers, biases); set "
            "optim.weight_decay_filter=auto, or use optim.name=adamw"
        )
    validate_head_and_sparsity(cfg)
    validate_method(cfg)
    if problem := inactive_ops_problem(cfg.augment):
        raise ConfigError(problem)


def validate_head_and_sparsity(cfg: Config) -> None:
    h, s = cfg.head, cfg.sparsity
    if problem := head_problem(h.kind, s):
        raise ConfigError(problem)
    if s.mode == "prune":
        if s.target_support is None:
            raise ConfigError(
                "sparsity.target_support: sparsity.mode=prune prunes the head to this "
                "fraction of its columns; set it, e.g. sparsity.target_support=0.25"
            )
        if s.prune_start > s.prune_end:
            raise ConfigError(
                f"sparsity.prune_start: {s.prune_start} is after sparsity.prune_end="
                f"{s.prune_end}; pruning must start before it ends, e.g. 0.1 and 0.5"
            )
    elif s.target_support is not None and s.lam == 0:
        raise ConfigError(
            "sparsity.target_support: the adaptive lambda starts from sparsity.lam and "
            "scales it; set sparsity.lam > 0, e.g. sparsity.lam=1e-4, or prune to the "
            "target with sparsity.mode=prune"
        )
    if h.rank is not None and "rank" in HEADS.lookup(h.kind).uses:
        in_dim = backbone_info(cfg.model, cfg.data.image_size).feature_dim
        if h.rank > in_dim:
            raise ConfigError(
                f"head.rank: {h.rank} exceeds the {in_dim} features of "
                f"{cfg.model.backbone} width {cfg.model.width}; choose 1..{in_dim}"
            )


def validate_method(cfg: Config) -> None:
    """The chosen method's own checks against the other sections, and against data.subset."""
    method = METHODS.lookup(cfg.method.name)
    a = cfg.augment
    multi_crop_methods = ", ".join(name for name, m in METHODS.items() if m.MULTI_CROP)
    for key, value, two_view in (("local_crops", a.local_crops, 0), ("global_crops", a.global_crops, 2)):
        if value != two_view and not method.MULTI_CROP:
            raise ConfigError(
                f"augment.{key}: method.name={cfg.method.name} takes two global views only; set "
                f"augment.{key}={two_view}, or use a method that takes multi-crop: {multi_crop_methods}"
            )
    method.check(cfg.method.params, cfg.train.batch_size, cfg.sparsity)
    if cfg.data.subset is not None and (problem := data_size_problem(cfg, cfg.data.subset)):
        raise ConfigError(problem)


def data_size_problem(cfg: Config, num_images: int) -> Optional[str]:
    """What is wrong with training `cfg` on `num_images` images beyond the batch size (None: nothing).
    Checked on data.subset before any work, and on the loaded data set by the training loop."""
    return METHODS.lookup(cfg.method.name).data_size_problem(cfg.method.params, num_images)
