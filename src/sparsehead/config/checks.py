"""The checks of a config that involve several sections, made before any work; each section first
checks itself (its `check()`, beside its dataclass)."""

from __future__ import annotations

from typing import Optional

from sparsehead.config.sections import Config
from sparsehead.core.errors import ConfigError
from sparsehead.methods import METHODS
from sparsehead.models.backbones import backbone_info
from sparsehead.models.heads import HEADS
from sparsehead.sparsity import head_problem


def validate(cfg: Config, check_paths: bool = True) -> None:
    """Every section's own checks (check_paths: the data folder exists), then those across sections."""
    cfg.data.check(check_paths)
    cfg.augment.check()
    cfg.sparsity.check()
    cfg.optim.check()
    cfg.train.check()
    d = cfg.data
    backbone_info(cfg.model, cfg.data.image_size)  # a timm model: created on the meta device, its checks
    if cfg.augment.local_size > d.image_size:
        raise ConfigError(
            f"augment.local_size: {cfg.augment.local_size} exceeds data.image_size={d.image_size}; "
            f"local crops are smaller than the global ones, e.g. augment.local_size=0 (auto)"
        )
    validate_head_and_sparsity(cfg)
    validate_method(cfg)


def validate_head_and_sparsity(cfg: Config) -> None:
    h = cfg.head
    if problem := head_problem(h.kind, cfg.sparsity):
        raise ConfigError(problem)
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
