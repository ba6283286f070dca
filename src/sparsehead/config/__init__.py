"""Typed run configuration: YAML in, `key=value` overrides, validation before any work starts.

Each section is declared beside the code it configures (config.sections lists where); this
package holds only the parsing (config.parsing), the migration of older run folders
(config.migration) and the checks across sections (config.checks). Every field carries its help
text, allowed values and range (core.options.opt), so one declaration drives validation, error
messages and `sparsehead pretrain --help`.
"""

from sparsehead.config.checks import data_size_problem, validate
from sparsehead.config.migration import migrate
from sparsehead.config.parsing import describe, from_dict, from_saved, load, merge, save, to_dict, with_data_overrides
from sparsehead.config.sections import (
    KNN_K,
    KNN_TEMPERATURE,
    KNN_WEIGHTED_K,
    Config,
    EvalConfig,
    MethodConfig,
    OptimConfig,
    TrainConfig,
)
from sparsehead.core.errors import ConfigError
from sparsehead.core.options import opt
from sparsehead.data.augment import AugmentConfig
from sparsehead.data.settings import DataConfig
from sparsehead.models.backbones import ModelConfig
from sparsehead.models.heads import HeadConfig
from sparsehead.sparsity import SPARSITY_MODES, SparsityConfig

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "AugmentConfig",
    "ModelConfig",
    "HeadConfig",
    "SparsityConfig",
    "MethodConfig",
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "load",
    "from_dict",
    "from_saved",
    "merge",
    "migrate",
    "to_dict",
    "save",
    "describe",
    "validate",
    "data_size_problem",
    "with_data_overrides",
    "opt",
    "KNN_K",
    "KNN_WEIGHTED_K",
    "KNN_TEMPERATURE",
    "SPARSITY_MODES",
]
