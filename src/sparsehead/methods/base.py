"""The small interface every method shares, and the registry that names them.

A method is one file: an nn.Module subclass registered with `@register("name")` that declares

- `Params`: a dataclass of its own parameters (`method.<key>` in a config), each an `opt(...)`
  with default, range and help, read by the same machinery as the config sections (core/options.py);
- `display_name`: how tables and reports name it;
- `STATE`: the submodules and buffers it checkpoints (its state_dict is exactly these);
- `check(params, batch_size, sparsity)` and `data_size_problem(params, num_images)`: its own
  validation, given the values of other sections it depends on;
- `forward(*views) -> MethodOutput(loss, logs, r, z)`: the loss of the views of a batch (the
  global views first, then any local crops), values to log, the representation r of the first
  view and the embeddings z of the first two global views (for online monitors). A two-view method
  writes `forward(self, x1, x2)`; one that takes multi-crop sets `MULTI_CROP = True`, writes
  `forward(self, *views)` (its `global_crops` first, through the backbone by `encode_crops`) and
  defines which global/local pairs its loss sees; config validation refuses local crops and more
  than two global crops for the others;
- optionally `after_step(step, total_steps, applied=True)` (EMA updates and the like, gated on the
  device on whether the update went ahead: `where_applied`), `set_epoch(epoch)` and `sparse_head()`.

It is built with explicit arguments, so it is usable without a Config:

    SimCLR(backbone, projector, temperature=0.2)     # or params=SimCLR.Params(temperature=0.2)

and from a run's config by `Method.from_config(params, head, global_crops, backbone)` (which builds
the projection head from the `head` section). The loss itself is a plain function in sparsehead.methods.losses.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional, Union

import torch
import torch.nn as nn

from sparsehead.core.options import opt
from sparsehead.core.registry import Registry
from sparsehead.models.heads import HeadConfig, build_head, out_dim
from sparsehead.sparsity import SparsityConfig

METHODS = Registry(
    "method",
    "method.name",
    hint=" (a method of a plugin module is registered when the module is named in SPARSEHEAD_PLUGINS)",
)
register = METHODS.register

Applied = Union[bool, torch.Tensor]  # whether a step's update went ahead: True, or a 0-dim device bool


def where_applied(applied: Applied, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """`new` where the step's update went ahead, else `old`: chosen on the device, nothing read back."""
    return new if applied is True else torch.where(applied, new, old)


class MethodOutput(NamedTuple):
    loss: torch.Tensor  # the self-supervised loss (a scalar)
    logs: dict  # extra values to log
    r: torch.Tensor  # the online representation of the first view (not detached)
    z: tuple = ()  # the online embeddings of the global views, view 1 first (the collapse monitor's)


class Method(nn.Module):
    name: ClassVar[str]  # set by @register
    display_name: ClassVar[str] = ""
    STATE: ClassVar[tuple[str, ...]] = ("backbone", "projector")
    MULTI_CROP: ClassVar[bool] = False  # whether forward takes more global crops and local crops

    @dataclass
    class Params:
        """A method without parameters of its own."""

    def __init__(
        self, backbone: nn.Module, projector: Optional[nn.Module] = None, params=None, global_crops: int = 2, **values
    ):
        """`params` (an instance of this class's Params) or its fields as keywords; `projector`
        defaults to the identity (a method with a fixed head builds its own); `global_crops`: how
        many of forward's views are global (augment.global_crops, more than 2 for MULTI_CROP only)."""
        super().__init__()
        if params is not None and values:
            raise TypeError("give params or keyword parameters, not both")
        self.params = params if params is not None else self.Params(**values)
        self.global_crops = global_crops
        self.backbone = backbone
        self.projector = projector if projector is not None else self.default_projector(backbone.feature_dim)
        self.embedding_dim = out_dim(self.projector, backbone.feature_dim)

    # --- building from a config -----------------------------------------------------------------

    @classmethod
    def from_config(cls, params, head: HeadConfig, global_crops: int, backbone: nn.Module) -> "Method":
        """The method with `params` (a run's method.*) on `backbone`, its projection head from the `head`
        section, taking `global_crops` global views (augment.global_crops)."""
        projector = cls.projector_from_config(head, backbone.feature_dim, params)
        return cls(backbone, projector, params, global_crops=global_crops)

    @classmethod
    def projector_from_config(cls, head: HeadConfig, in_dim: int, params) -> nn.Module:
        """The projection head from the `head` config section (a method may adjust it)."""
        return build_head(head.kind, in_dim, head.hidden_dim, head.out_dim, head.num_layers, head.last_bn, head.rank)

    def default_projector(self, in_dim: int) -> nn.Module:
        return nn.Identity()

    # --- validation (config.validate calls these) ----------------------------------------------

    @classmethod
    def check(cls, params, batch_size: int, sparsity: SparsityConfig) -> None:
        """Checks of this method's parameters against the values of other config sections it depends on
        (train.batch_size, the sparsity section); raise ConfigError."""

    @classmethod
    def data_size_problem(cls, params, num_images: int) -> Optional[str]:
        """What is wrong with training on `num_images` images (None: nothing). Checked on
        data.subset before any work, and on the loaded data set by the training loop."""
        return None

    @classmethod
    def param_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.Params)]

    # --- what the training loop uses -------------------------------------------------------------

    def project_views(self, x1: torch.Tensor, x2: torch.Tensor):
        """(r1, z1, z2): the online representation of view 1 and the embeddings of both views
        (view 1 first, so BatchNorm statistics and random draws follow the two-view order). A backbone
        without batch statistics (a ViT: LayerNorm only) takes both views as one batch: the same function,
        and one large forward instead of two on a GPU; a BatchNorm backbone keeps its statistics per view,
        as these methods' official code."""
        r1, r2 = encode_pair(self.backbone, x1, x2)
        return r1, self.projector(r1), self.projector(r2)

    def encode_crops(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """r of every view, in order. Each run of consecutive views of one size goes through the
        backbone as one batch, as SwAV's and DINO's code (one forward per resolution): BatchNorm
        statistics span all the crops of that size, and a GPU runs a few large forwards."""
        rs: list[torch.Tensor] = []
        for _, same_size in itertools.groupby(views, key=lambda x: x.shape[-2:]):
            same_size = list(same_size)
            r = self.backbone(torch.cat(same_size) if len(same_size) > 1 else same_size[0])
            rs += r.split([len(x) for x in same_size])
        return rs

    def forward(self, *views: torch.Tensor) -> MethodOutput:
        """The self-supervised loss of the views of a batch (global, then local), extra logs, and r
        of view 1."""
        raise NotImplementedError

    def sparse_head(self) -> nn.Module:
        """The online projection head SparseHead penalises (never an EMA copy or a predictor)."""
        return self.projector

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, z) of the online network, for evaluation and diagnostics."""
        r = self.backbone(x)
        return r, self.projector(r)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int, applied: Applied = True) -> None:
        """Called after every optimiser step (EMA updates and the like). `applied` (True, or a 0-dim device
        bool): whether the step's update went ahead. The work is gated on it on the device (where_applied),
        never read back (the step reads nothing: training/step.py), so a skipped step leaves the state."""

    def set_epoch(self, epoch: int) -> None:
        """Called before each epoch's first step (also on resume), for state that starts at an epoch."""


def has_batch_statistics(module: nn.Module) -> bool:
    """Whether any layer of `module` normalises by the statistics of the batch (BatchNorm, SyncBatchNorm)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def encode_pair(backbone: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's r of two views: one forward of both where it has no batch statistics, else one a view."""
    if x1.shape == x2.shape and not has_batch_statistics(backbone):
        r1, r2 = backbone(torch.cat([x1, x2])).chunk(2)
        return r1, r2
    return backbone(x1), backbone(x2)


def temperature_opt(default: float):
    """method.temperature: the softmax temperature tau of the contrastive methods (their own default)."""
    return opt(default, "softmax temperature tau", min=0.0, exclusive_min=True)


def predictor_hidden_dim_opt():
    """method.predictor_hidden_dim: the hidden width of the MLP predictor of BYOL, MoCo v3 and SimSiam."""
    return opt(512, "predictor hidden width (SimSiam: its bottleneck, published head.out_dim / 4)", min=1)


def params_of(name: str) -> list[str]:
    """The `method.<key>` names method `name` accepts (besides method.name)."""
    return METHODS.lookup(name).param_names()
