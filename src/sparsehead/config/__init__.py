"""Typed run configuration: YAML in, `key=value` overrides, validation before any work starts.

The sections common to every run are declared here (data, model, head, sparsity, optim, train,
eval) or beside the code they configure (augment: augment.py, beside the recipe logic). The `method` section is
method.name plus the chosen method's own parameters, declared by the method itself (its Params
class, methods/base.py): a key the chosen method does not have is refused, naming those it has.
Every field carries its help text, allowed values and range (options.opt), so the same
declaration drives validation, error messages and `sparsehead pretrain --help`.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from sparsehead.core import options
from sparsehead.core.errors import ConfigError
from sparsehead.core.options import opt
from sparsehead.data.augment import AugmentConfig, inactive_ops_problem
from sparsehead.methods import METHODS
from sparsehead.models.backbones import backbone_info
from sparsehead.models.heads import HEADS
from sparsehead.sparsity import sparsity_active

__all__ = ["Config", "ConfigError", "DataConfig", "AugmentConfig", "ModelConfig", "HeadConfig",
           "SparsityConfig", "MethodConfig", "OptimConfig", "TrainConfig", "EvalConfig", "load", "from_dict",
           "from_saved", "merge", "to_dict", "save", "describe", "validate", "data_size_problem", "opt"]


@dataclass
class DataConfig:
    source: Literal["digits", "cifar10", "cifar100", "stl10", "imagefolder", "imagenet", "imagenet100",
                    "tinyimagenet"] = opt(
        "digits", "data set: digits (embedded, scikit-learn), cifar10, cifar100, stl10 (torchvision), "
        "imagefolder (a folder holding train/ and test/ class sub-folders), imagenet (train/<wnid>/*.JPEG, "
        "val/<wnid>/*), imagenet100 (imagenet's folders, CMC's 100 classes) or tinyimagenet (train/<wnid>/images, "
        "val/images + val_annotations.txt)")
    root: Optional[str] = opt(None, "data folder (torchvision sets, imagefolder); unused for digits")
    download: bool = opt(False, "let torchvision download cifar10/cifar100/stl10 when missing")
    image_size: int = opt(32, "side of the square training views (images are resized to it)", min=8)
    subset: Optional[int] = opt(None, "use a class-stratified subset of this many training images", min=1)
    cache_dir: Optional[str] = opt(
        "~/.cache/sparsehead", "where decoded uint8 copies of folder data sets and their file indexes are cached (null: off)")
    bad_images: Literal["fail", "skip"] = opt(
        "fail", "an unreadable image in an imagefolder: stop with its path, or skip it and count it")
    storage: Literal["memory", "stream", "auto"] = opt(
        "auto", "memory: decode the set once into uint8 at data.image_size; stream: keep only a file index and "
        "decode in DataLoader workers, each view's crop cut from the full-resolution image (folder sources: "
        "imagefolder, imagenet, imagenet100, tinyimagenet); auto: memory when the decoded set fits "
        "data.memory_budget_gb, else stream")
    memory_budget_gb: float = opt(16.0, "the most a decoded in-memory data set may take (GB, 1e9 bytes)",
                                  min=0.0, exclusive_min=True)
    workers: int = opt(4, "DataLoader worker processes of data.storage=stream (0: decode in the main process)",
                       min=0)


@dataclass
class ModelConfig:
    backbone: str = opt(
        "resnet18", "resnet18, resnet34, resnet50 (torchvision), or timm:<name>, any timm model (pip install "
        "'sparsehead[timm]'), e.g. timm:vit_small_patch16_224, timm:convnext_tiny; created without classifier, "
        "r = its pooled features, dimension read from the model (docs/timm.md)")
    width: int = opt(64, "base width (64 = the standard ResNet); smaller for CPU-sized runs; ResNets only", min=1)
    stem: Literal["auto", "cifar", "imagenet"] = opt(
        "auto", "cifar: 3x3 conv stride 1, no max-pool; imagenet: 7x7 stride 2 + max-pool; "
        "auto: cifar below 64 px; ResNets only")
    timm_args: dict = opt(
        {}, "keyword arguments of timm.create_model for a timm:<name> backbone, a mapping (in YAML, or "
        "model.timm_args.patch_size=4 on the command line), e.g. patch_size, depth, embed_dim, num_heads, "
        "drop_path_rate; img_size defaults to data.image_size for the models that take one; the pooling is "
        "timm's global_pool (ViT: token = the CLS token, the default, or avg = mean of the patch tokens)")
    sync_batchnorm: bool = opt(True, "convert BatchNorm to SyncBatchNorm under DDP")


@dataclass
class HeadConfig:
    kind: str = opt(
        "mlp", "projection head, a name in models.heads.HEADS: identity (none), linear, mlp; Jing et al. 2022 "
        "Table 2: diagonal (trainable z = w * r), lowrank (fixed U diag(1 x rank, 0...) V^T, U and V random "
        "orthogonal), lowrank_diagonal (fixed diag(1 x rank, 0...) = DirectCLR), orthogonal (a linear layer "
        "kept orthogonal); the last four keep the backbone's dimension")
    hidden_dim: int = opt(512, "hidden width of the MLP head", min=1)
    out_dim: int = opt(128, "embedding dimension m of the linear and mlp heads (the others keep the "
                            "backbone's dimension)", min=1)
    num_layers: int = opt(2, "linear layers in the MLP head (2 or 3)", min=2, max=3)
    last_bn: bool = opt(False, "BatchNorm after the last linear layer of the MLP head")
    rank: Optional[int] = opt(
        None, "d0 of the lowrank / lowrank_diagonal heads, at most the backbone's feature dimension "
              "(null: 360/2048 of it, DirectCLR's ratio; 90 for 512 features)", min=1)


SPARSITY_MODES = ("penalty", "proximal", "prune")


@dataclass
class SparsityConfig:
    lam: float = opt(0.0, "SparseHead lambda: weight of the L2,1 penalty (paper: 1e-4; 0 = off); "
                          "with sparsity.target_support in penalty/proximal mode, the starting value", min=0.0)
    layers: Literal["last", "first", "all"] = opt(
        "last", "which linear layers of the head are penalised (paper: last)")
    support_threshold: float = opt(
        1e-3, "a column counts as zero when its norm is below this fraction of the largest", min=0.0)
    mode: Literal[SPARSITY_MODES] = opt(
        "penalty", "penalty (the default, the paper's method; use it to reproduce the paper): lambda * L2,1 "
        "added to the loss. Every method but VICReg ignores the head layer's scale, so the penalty mostly "
        "shrinks the whole layer: under Adam, AdamW and SGD with momentum it also spreads the column norms "
        "but zeroes none; under LARS (trust ratio) it barely acts. proximal: no loss term, each column "
        "group-soft-thresholded by lr * lambda after every optimiser step (exact zeros): the proximal "
        "gradient step under plain SGD (with momentum it is weaker than the penalty at the same lambda, "
        "which momentum amplifies); under Adam/AdamW lambda must be of order 1-10, with a narrow window "
        "between no effect and a collapsed head; under LARS lr * lambda is off LARS's step scale. prune "
        "(recommended for a sparse head; the same under every optimiser): the penalty as above if lambda > "
        "0, plus pruning of the smallest-norm columns on a cubic schedule from sparsity.prune_start to "
        "sparsity.prune_end to exactly round(target_support * columns); pruned columns are set to exact "
        "zero after every step and stay zero; the mask is saved in checkpoints. See docs/sparsehead.md")
    target_support: Optional[float] = opt(
        None, "penalty/proximal: adaptive lambda, fraction of penalised columns to keep; lambda is "
        "multiplied by exp(adapt_gain * (support_frac - target)) every adapt_every steps (null: fixed "
        "lambda); prune: the fraction of columns the pruning schedule ends at (required)",
        min=0.0, max=1.0, exclusive_min=True)
    adapt_gain: float = opt(0.05, "adaptive lambda: gain of the multiplicative update", min=0.0,
                            exclusive_min=True)
    adapt_every: int = opt(1, "adaptive lambda: optimiser steps between updates", min=1)
    lam_range: float = opt(1e4, "adaptive lambda stays within [lam / lam_range, lam * lam_range] "
                                "of the starting sparsity.lam", min=1.0)
    prune_start: float = opt(0.1, "prune mode: fraction of the run's optimiser steps (train.epochs) "
                                  "after which pruning starts", min=0.0, max=1.0)
    prune_end: float = opt(0.5, "prune mode: fraction of the run's steps at which the support reaches "
                                "target_support (then only fine-tuning with the mask)", min=0.0, max=1.0)


@dataclass
class MethodConfig:
    """method.name and the chosen method's own parameters (method.<key>: its Params instance).

    cfg.method.temperature reads params.temperature; a key the method does not have is an
    AttributeError naming the method."""
    name: str = "simclr"
    params: Any = None

    def __post_init__(self):
        if self.params is None:
            self.params = METHODS.lookup(self.name).Params()

    def __getattr__(self, key):
        params = self.__dict__.get("params")
        if params is None or key.startswith("__"):
            raise AttributeError(key)
        try:
            return getattr(params, key)
        except AttributeError:
            raise AttributeError(f"method {self.name} has no parameter {key!r}") from None


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd", "lars"] = opt("adam", "optimiser (paper: adam)")
    lr: float = opt(3e-3, "peak learning rate (paper: 3e-3 on CIFAR)", min=0.0, exclusive_min=True)
    weight_decay: float = opt(1e-6, "weight decay (paper: 1e-6)", min=0.0)
    momentum: float = opt(0.9, "SGD / LARS momentum", min=0.0, max=1.0)
    warmup_epochs: float = opt(0.0, "linear warm-up length in epochs before the cosine decay", min=0.0)
    min_lr_ratio: float = opt(0.0, "final learning rate as a fraction of the peak", min=0.0, max=1.0)


@dataclass
class TrainConfig:
    epochs: int = opt(100, "pretraining epochs", min=1)
    max_steps: Optional[int] = opt(None, "stop after this many optimiser steps (schedules still span "
                                         "all epochs); for smoke tests", min=1)
    batch_size: int = opt(256, "images per step across all processes (each gives two views)", min=2)
    seed: int = opt(0, "random seed of weights, data order and augmentation")
    device: str = opt("auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    out_dir: str = opt("runs", "parent folder of run folders")
    run_name: Optional[str] = opt(None, "run folder name (default: method-head-lam-seed-time)")
    checkpoint_every: int = opt(1000, "save a checkpoint every N steps (0: only at the end)", min=0)
    keep_checkpoints: int = opt(3, "how many of the newest checkpoints a run folder keeps", min=1)
    nonfinite: Literal["stop", "skip"] = opt(
        "stop", "a NaN/Inf loss or gradient: stop the run (last checkpoint kept), or skip the step "
        "(no update) and count it")
    nonfinite_max_skips: int = opt(10, "with train.nonfinite=skip: stop after this many consecutive "
                                       "skipped steps", min=1)
    log_every: int = opt(10, "write metrics every N steps", min=1)
    loggers: list[Literal["jsonl", "tensorboard", "csv", "wandb"]] = opt(
        ["jsonl", "tensorboard"], "where metrics go: RUN/metrics.jsonl always, plus any of tensorboard "
        "(RUN/tensorboard), csv (RUN/metrics.csv), wandb (the wandb extra; WANDB_MODE=offline works "
        "without a network); the config and environment are recorded in tensorboard and wandb too")
    wandb_project: str = opt("sparsehead", "wandb project of the run (train.loggers: wandb)")
    progress: bool = opt(True, "show a tqdm progress bar")
    threads: Optional[int] = opt(None, "CPU threads for torch (default: torch's choice)", min=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "auto", "autocast dtype of the forward pass (losses stay float32); fp16 (CUDA only) adds a "
        "GradScaler; auto: fp32 on the CPU, bf16 on CUDA (fp16 where bf16 is unsupported)")
    channels_last: bool = opt(True, "channels_last (NHWC) memory format for model and views; measured "
                                    "faster on the CPU too (docs/performance.md)")
    compile: bool = opt(False, "torch.compile the model (slow first steps; needs a C++ compiler on CPU)")


# The k-NN conventions, used by the training monitors and `sparsehead evaluate --protocol knn`:
# the SparseHead paper's 5-NN majority vote, and InstDisc / MoCo's 200-NN vote weighted exp(sim / 0.1).
KNN_K, KNN_WEIGHTED_K, KNN_TEMPERATURE = 5, 200, 0.1


@dataclass
class EvalConfig:
    knn_k: int = opt(KNN_K, "k of the end-of-training k-NN (paper: 5, majority vote)", min=1)
    knn_batch_size: int = opt(1024, "test samples per k-NN block (bounds memory)", min=1)
    knn_every: int = opt(0, "k-NN monitor during pretraining every N epochs (0: off)", min=0)
    online_linear: bool = opt(False, "train an online linear classifier on r.detach() during "
                                     "pretraining, logged as online_linear_acc")
    online_linear_lr: float = opt(1e-3, "Adam learning rate of the online linear classifier", min=0.0,
                                  exclusive_min=True)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------------------------
# Building a Config from nested dicts, with one clear error per problem.

def _build(values: dict) -> Config:
    if not isinstance(values, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {values!r}")
    sections = {f.name: f for f in dataclasses.fields(Config)}
    unknown = set(values) - set(sections)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{key}: unknown key; allowed keys here: {', '.join(sections)}")
    hints = typing.get_type_hints(Config)
    kwargs = {name: (_build_method(value) if name == "method" else options.build(hints[name], value, f"{name}."))
              for name, value in values.items()}
    if "head" in kwargs:
        HEADS.lookup(kwargs["head"].kind)  # a registered head
    return Config(**kwargs)


def _build_method(values: dict) -> MethodConfig:
    """method.name, then the keys of that method's Params, checked against its declarations."""
    if not isinstance(values, dict):
        raise ConfigError(f"method: expected a mapping of keys, got {values!r}")
    values = dict(values)
    name = values.pop("name", MethodConfig.name)
    cls = METHODS.lookup(name)

    def unknown(key, allowed):
        owners = [n for n, c in METHODS.items() if key in c.param_names()]
        where = f" (a key of {', '.join(owners)})" if owners else ""
        return (f"method.{key}: not a parameter of method.name={name}{where}; the keys of {name} are: "
                f"{', '.join(['name', *allowed])}")
    # null for a parameter that is not optional means the method's own default (method.temperature=null)
    required = {f.name for f in dataclasses.fields(cls.Params) if typing.get_origin(
        typing.get_type_hints(cls.Params)[f.name]) is not typing.Union}
    values = {k: v for k, v in values.items() if not (v is None and k in required)}
    return MethodConfig(name, options.build(cls.Params, values, "method.", unknown))


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. sparsity.lam=1e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {err}") from None
    # YAML 1.1 reads "1e-4" as a string: accept scientific notation as a number.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def merge(base: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` overrides to a nested dict (a copy)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for text in overrides:
        path, value = _parse_override(text)
        if len(path) == 3 and _is_mapping_key(path[0], path[1]):  # model.timm_args.patch_size=4
            section = out.setdefault(path[0], {})
            section[path[1]] = {**(section.get(path[1]) or {}), path[2]: value}
            continue
        if len(path) != 2:
            raise ConfigError(f"override {text!r}: keys have the form section.key, e.g. train.epochs=10; "
                              f"sections: {', '.join(f.name for f in dataclasses.fields(Config))}")
        section = out.setdefault(path[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"{path[0]}: expected a mapping")
        section[path[1]] = value
    return out


def _is_mapping_key(section: str, key: str) -> bool:
    """A free-form mapping option (declared `dict`), whose own keys overrides may name."""
    hints = typing.get_type_hints(Config)
    if section not in hints or not dataclasses.is_dataclass(hints[section]):
        return False
    return typing.get_type_hints(hints[section]).get(key) is dict


def _fix_yaml_floats(values):
    """YAML 1.1 reads 1e-4 (no dot) as a string; turn such strings back into numbers."""
    if isinstance(values, dict):
        return {k: _fix_yaml_floats(v) for k, v in values.items()}
    if isinstance(values, str):
        try:
            return float(values) if any(c in values.lower() for c in "e.") else values
        except ValueError:
            return values
    return values


def from_dict(values: dict, check_paths: bool = True) -> Config:
    """A validated Config; check_paths=False for configs saved by a run on another machine."""
    cfg = _build(_fix_yaml_floats(values or {}))
    validate(cfg, check_paths)
    return cfg


def migrate(values: dict, schema: int) -> dict:
    """A config dict saved with run-folder schema `schema` (rundir.SCHEMA) in today's layout.

    Schema 1 (no run.json; sparsehead before the method registry) saved one flat method section
    holding the keys of every method; only the chosen method's keys are kept (the old code
    ignored the others)."""
    method = values.get("method") if isinstance(values, dict) else None
    if schema < 2 and isinstance(method, dict) and method.get("name", MethodConfig.name) in METHODS:
        keep = {"name", *METHODS[method.get("name", MethodConfig.name)].param_names()}
        values = {**values, "method": {k: v for k, v in method.items() if k in keep}}
    return values


def from_saved(values: dict, schema: int) -> Config:
    """The config a run saved (config.yaml or a checkpoint's), paths not checked."""
    return from_dict(migrate(values or {}, schema), check_paths=False)


def load(path: Optional[str | os.PathLike] = None, overrides: Optional[list[str]] = None) -> Config:
    """Read a YAML config (or the defaults), apply overrides and validate everything."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; see the configs/ folder for examples")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    return from_dict(merge(values, overrides or []))


def validate(cfg: Config, check_paths: bool = True) -> None:
    """Checks that involve several keys or the file system."""
    d = cfg.data
    if d.source != "digits" and not d.root:
        raise ConfigError(f"data.root: required for data.source={d.source}; give the data folder, "
                          "e.g. data.root=../shared/data/cifar10")
    if check_paths and d.root and d.source != "digits":
        root = Path(d.root).expanduser()
        downloadable = d.source in ("cifar10", "cifar100", "stl10")
        if not root.exists() and not (d.download and downloadable):
            hint = " or set data.download=true" if downloadable else ""
            raise ConfigError(f"data.root: folder {root} does not exist; give an existing folder{hint}")
    backbone_info(cfg.model, cfg.data.image_size)  # a timm model: created on the meta device, its checks
    if cfg.augment.crop_scale_min > cfg.augment.crop_scale_max:
        raise ConfigError("augment.crop_scale_min: must not exceed augment.crop_scale_max")
    if cfg.augment.local_scale_min > cfg.augment.local_scale_max:
        raise ConfigError("augment.local_scale_min: must not exceed augment.local_scale_max")
    if cfg.augment.local_size > d.image_size:
        raise ConfigError(f"augment.local_size: {cfg.augment.local_size} exceeds data.image_size={d.image_size}; "
                          f"local crops are smaller than the global ones, e.g. augment.local_size=0 (auto)")
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"train.device: {dev!r} is not allowed; choose auto, cpu, cuda or cuda:N")
    validate_head_and_sparsity(cfg)
    validate_method(cfg)
    if (problem := inactive_ops_problem(cfg.augment)):
        raise ConfigError(problem)


def validate_head_and_sparsity(cfg: Config) -> None:
    h, s = cfg.head, cfg.sparsity
    if sparsity_active(s) and not HEADS.lookup(h.kind).sparsehead:
        why = ("its columns all have norm 1, so the L2,1 penalty is constant" if h.kind == "orthogonal"
               else "it has no trainable linear layer")
        key, off = ("sparsity.lam", "sparsity.lam=0") if s.lam > 0 else ("sparsity.mode", "sparsity.mode=penalty")
        raise ConfigError(f"{key}: SparseHead cannot act on head.kind={h.kind} ({why}); "
                          f"set head.kind=linear, mlp or diagonal, or {off}")
    if s.mode == "prune":
        if s.target_support is None:
            raise ConfigError("sparsity.target_support: sparsity.mode=prune prunes the head to this "
                              "fraction of its columns; set it, e.g. sparsity.target_support=0.25")
        if s.prune_start > s.prune_end:
            raise ConfigError(f"sparsity.prune_start: {s.prune_start} is after sparsity.prune_end="
                              f"{s.prune_end}; pruning must start before it ends, e.g. 0.1 and 0.5")
    elif s.target_support is not None and s.lam == 0:
        raise ConfigError("sparsity.target_support: the adaptive lambda starts from sparsity.lam and "
                          "scales it; set sparsity.lam > 0, e.g. sparsity.lam=1e-4, or prune to the "
                          "target with sparsity.mode=prune")
    if h.rank is not None and "rank" in HEADS.lookup(h.kind).uses:
        in_dim = backbone_info(cfg.model, cfg.data.image_size).feature_dim
        if h.rank > in_dim:
            raise ConfigError(f"head.rank: {h.rank} exceeds the {in_dim} features of "
                              f"{cfg.model.backbone} width {cfg.model.width}; choose 1..{in_dim}")


def validate_method(cfg: Config) -> None:
    """The chosen method's own checks against the other sections, and against data.subset."""
    method = METHODS.lookup(cfg.method.name)
    if cfg.augment.local_crops and not method.MULTI_CROP:
        raise ConfigError(f"augment.local_crops: method.name={cfg.method.name} takes the two global views only; "
                          "set augment.local_crops=0, or use a method that takes local crops: "
                          + ", ".join(name for name, m in METHODS.items() if m.MULTI_CROP))
    method.check(cfg.method.params, cfg)
    if cfg.data.subset is not None and (problem := data_size_problem(cfg, cfg.data.subset)):
        raise ConfigError(problem)


def data_size_problem(cfg: Config, num_images: int) -> Optional[str]:
    """What is wrong with training `cfg` on `num_images` images beyond the batch size (None: nothing).
    Checked on data.subset before any work, and on the loaded data set by the training loop."""
    return METHODS.lookup(cfg.method.name).data_size_problem(cfg.method.params, num_images)


def with_data_overrides(cfg: Config, texts: typing.Sequence[str]) -> Config:
    """`cfg` with `--data KEY=VALUE` overrides of its data section (KEY or data.KEY), validated with
    the paths checked: the one meaning of --data for evaluate and analyze."""
    full = []
    for text in texts:
        if "=" not in text:
            raise ConfigError(f"--data {text!r}: expected KEY=VALUE, e.g. --data root=/path/to/data")
        key = text.split("=", 1)[0]
        if "." in key and not key.startswith("data."):
            raise ConfigError(f"--data {text!r}: only data.* keys can be changed, e.g. --data "
                              "source=imagefolder root=/path/to/images")
        full.append(text if key.startswith("data.") else f"data.{text}")
    try:
        return from_dict(merge(to_dict(cfg), full), check_paths=True)
    except ConfigError as err:
        raise ConfigError(f"{err} (the run's saved data settings; change them with --data KEY=VALUE, "
                          "e.g. --data root=/path/to/data)") from None


def to_dict(cfg: Config) -> dict:
    """Plain nested dicts (the layout of config.yaml): method as {name, its parameters}."""
    out = {}
    for f in dataclasses.fields(Config):
        section = getattr(cfg, f.name)
        out[f.name] = ({"name": section.name, **dataclasses.asdict(section.params)} if f.name == "method"
                       else dataclasses.asdict(section))
    return out


def save(cfg: Config, path: str | os.PathLike) -> None:
    from sparsehead.core.atomic import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe() -> str:
    """Every key with its type, default and help: the body of `sparsehead pretrain --help`."""
    lines = []
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        lines.append(f"{section.name}:")
        if section.name != "method":
            lines += options.describe_fields(hints[section.name], f"{section.name}.")
            if section.name == "head":
                lines.append("  head.kind values, with the head.* keys each reads: " + ", ".join(
                    f"{name} ({' '.join(build.uses) or '-'})" for name, build in HEADS.items()))
            continue
        lines.append(f"  method.name ({'|'.join(METHODS)}, default {MethodConfig.name}): self-supervised "
                     "method; the method.<key> lines below are the parameters of the method in brackets")
        for name, cls in METHODS.items():
            lines += options.describe_fields(cls.Params, "method.", f" [{name}]")
    return "\n".join(lines)
