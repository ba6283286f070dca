"""Typed run configuration: YAML in, `key=value` overrides, validation before any work starts.

Every field carries its help text, allowed values and range in its metadata, so the same
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


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and the fix."""


def opt(default, help: str, *, min=None, max=None, exclusive_min: bool = False):
    """A config field with help text and an optional numeric range."""
    meta = {"help": help, "min": min, "max": max, "exclusive_min": exclusive_min}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    source: Literal["digits", "cifar10", "cifar100", "stl10", "imagefolder"] = opt(
        "digits", "data set: digits (embedded, scikit-learn), cifar10, cifar100, stl10 (torchvision) "
        "or imagefolder (a folder holding train/ and test/ class sub-folders)")
    root: Optional[str] = opt(None, "data folder (torchvision sets, imagefolder); unused for digits")
    download: bool = opt(False, "let torchvision download cifar10/cifar100/stl10 when missing")
    image_size: int = opt(32, "side of the square training views (images are resized to it)", min=8)
    subset: Optional[int] = opt(None, "use a class-stratified subset of this many training images", min=1)
    cache_dir: Optional[str] = opt(
        "~/.cache/sparsehead", "where decoded uint8 copies of imagefolder data sets are cached (null: off)")
    bad_images: Literal["fail", "skip"] = opt(
        "fail", "an unreadable image in an imagefolder: stop with its path, or skip it and count it")


AUGMENT_OPS = ("crop", "blur", "color_drop", "color_distort", "flip", "solarize")


@dataclass
class AugmentConfig:
    recipe: Literal["simclr", "byol", "none"] = opt(
        "simclr", "view recipe: simclr (symmetric), byol (asymmetric blur/solarise) or none")
    crop_scale_min: float = opt(0.08, "RandomResizedCrop smallest area fraction", min=0.0, max=1.0,
                                exclusive_min=True)
    crop_scale_max: float = opt(1.0, "RandomResizedCrop largest area fraction", min=0.0, max=1.0,
                                exclusive_min=True)
    flip_p: float = opt(0.5, "probability of a horizontal flip", min=0.0, max=1.0)
    jitter_p: float = opt(0.8, "probability of colour jitter", min=0.0, max=1.0)
    color_strength: float = opt(
        0.5, "colour strength s: jitter (0.8s, 0.8s, 0.8s, 0.2s); 0.5 = the SimCLR CIFAR recipe "
        "(0.4, 0.4, 0.4, 0.1)", min=0.0)
    grayscale_p: float = opt(0.2, "probability of converting a view to grayscale", min=0.0, max=1.0)
    blur_p: list = opt([0.0, 0.0], "Gaussian blur probability for view 1 and view 2", min=0.0, max=1.0)
    solarize_p: list = opt([0.0, 0.0], "solarisation probability for view 1 and view 2", min=0.0, max=1.0)
    ops: Optional[list[Literal[AUGMENT_OPS]]] = opt(
        None, "the transformations to use, papers/002's ablation: any of crop, blur, color_drop "
        "(grayscale), color_distort (jitter), flip, solarize, e.g. [crop, color_distort]; each keeps "
        "the probability set above (or by the recipe), the others are off (null: all of the recipe's)")


@dataclass
class ModelConfig:
    backbone: Literal["resnet18", "resnet34", "resnet50"] = opt("resnet18", "torchvision ResNet")
    width: int = opt(64, "base width (64 = the standard ResNet); smaller for CPU-sized runs", min=1)
    stem: Literal["auto", "cifar", "imagenet"] = opt(
        "auto", "cifar: 3x3 conv stride 1, no max-pool; imagenet: 7x7 stride 2 + max-pool; "
        "auto: cifar below 64 px")
    sync_batchnorm: bool = opt(True, "convert BatchNorm to SyncBatchNorm under DDP")


@dataclass
class HeadConfig:
    kind: Literal["identity", "linear", "mlp", "diagonal", "lowrank", "lowrank_diagonal", "orthogonal"] = opt(
        "mlp", "projection head: identity (none), linear, mlp; papers/003 Table 2: diagonal (trainable "
        "z = w * r), lowrank (fixed U diag(1 x rank, 0...) V^T, U and V random orthogonal), "
        "lowrank_diagonal (fixed diag(1 x rank, 0...) = DirectCLR), orthogonal (a linear layer kept "
        "orthogonal); the last four keep the backbone's dimension")
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


METHOD_NAMES = ("simclr", "byol", "barlow_twins", "simsiam", "vicreg", "moco_v2", "moco_v3", "directclr",
                "directpred", "directcopy", "wmse", "swav")

# Keys whose default depends on the method (None in a config file = this table's value). They are
# filled in by from_dict, so the saved config of every run records the value it used.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "temperature": {"simclr": 0.5, "moco_v2": 0.2, "moco_v3": 0.2, "directclr": 0.1, "swav": 0.1},
    "momentum": {"byol": 0.99, "moco_v2": 0.999, "moco_v3": 0.99, "directpred": 0.99, "directcopy": 0.99},
}


@dataclass
class MethodConfig:
    name: Literal[METHOD_NAMES] = opt("simclr", "self-supervised method")
    temperature: Optional[float] = opt(
        None, "softmax temperature tau (null: the method's default: SimCLR 0.5 as the paper, MoCo 0.2, "
        "DirectCLR 0.1, SwAV 0.1)", min=0.0, exclusive_min=True)
    momentum: Optional[float] = opt(
        None, "base EMA momentum of the target / key network, cosine schedule to 1 where the method has "
        "one (null: the method's default: BYOL 0.99, MoCo v2 0.999, MoCo v3 0.99, DirectPred/Copy 0.99)",
        min=0.0, max=1.0)
    predictor_hidden_dim: int = opt(
        512, "predictor hidden width: BYOL, MoCo v3; SimSiam's bottleneck (published: head.out_dim / 4)", min=1)
    lambda_offdiag: float = opt(0.0051, "Barlow Twins off-diagonal weight", min=0.0)
    loss: Literal["nt_xent", "huang"] = opt(
        "nt_xent", "SimCLR's loss: nt_xent, or huang = Huang et al.'s revised InfoNCE ||z1 - z2||^2 + "
        "lambda * mean log sum exp(z^T z^- / tau) on normalised z, negatives = views of the other "
        "images (the paper used tau 0.2: set method.temperature=0.2)")
    huang_lambda: float = opt(1.0, "weight lambda of the negatives term of method.loss=huang", min=0.0)
    vicreg_sim_coeff: float = opt(25.0, "VICReg invariance (MSE) weight", min=0.0)
    vicreg_std_coeff: float = opt(25.0, "VICReg variance (std hinge) weight", min=0.0)
    vicreg_cov_coeff: float = opt(1.0, "VICReg covariance (off-diagonal) weight", min=0.0)
    queue_size: int = opt(
        4096, "MoCo v2 queue length K (paper: 65536 ImageNet, 4096-32768 CIFAR); at least the keys "
        "of one step, and best below the number of training images (else an image's own older key "
        "is among its negatives)", min=1)
    moco_symmetric: bool = opt(
        False, "MoCo v2: false = the official asymmetric loss ctr(q1, k2); true = (ctr(q1, k2) + "
        "ctr(q2, k1)) / 2 with both views' keys enqueued, as many CIFAR implementations")
    directclr_dim: Optional[int] = opt(
        None, "DirectCLR sub-vector size d0: the loss sees r[:, :d0] (null: 360/2048 of the backbone's "
        "feature dimension, the paper's ratio for ResNet-50, rounded; must not exceed that dimension)", min=1)
    predictor_freq: int = opt(1, "DirectPred/DirectCopy: set the predictor from F every N steps "
                                 "(official code: 1)", min=1)
    predictor_rho: float = opt(0.3, "DirectPred/DirectCopy: F <- rho F + (1 - rho) mean(f f^T)",
                               min=0.0, max=1.0)
    predictor_eps: float = opt(0.01, "DirectPred: eps added to the predictor's eigenvalues; DirectCopy: "
                                     "eps I added to the predictor", min=0.0)
    directcopy_normalize: bool = opt(True, "DirectCopy: divide F by its Frobenius norm as the paper "
                                           "states (false: the official code, no normalisation)")
    wmse_w_size: int = opt(128, "W-MSE whitening sub-batch size (paper: 128); a smaller per-process "
                                "batch is whitened whole; must exceed the embedding dimension", min=2)
    wmse_w_iter: int = opt(1, "W-MSE: random sub-batch splits per step (paper's default: 1)", min=1)
    wmse_eps: float = opt(0.0, "W-MSE: shrink the covariance towards I before whitening (official: 0)",
                          min=0.0, max=1.0)
    swav_prototypes: int = opt(300, "SwAV number of prototypes K (paper: 3000 on ImageNet; 300 here "
                                    "for CIFAR-sized data sets and batches)", min=1)
    swav_epsilon: float = opt(0.05, "SwAV Sinkhorn-Knopp entropy epsilon", min=0.0, exclusive_min=True)
    swav_sinkhorn_iters: int = opt(3, "SwAV Sinkhorn-Knopp iterations", min=1)


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
    progress: bool = opt(True, "show a tqdm progress bar")
    threads: Optional[int] = opt(None, "CPU threads for torch (default: torch's choice)", min=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "auto", "autocast dtype of the forward pass (losses stay float32); fp16 (CUDA only) adds a "
        "GradScaler; auto: fp32 on the CPU, bf16 on CUDA (fp16 where bf16 is unsupported)")
    channels_last: bool = opt(True, "channels_last (NHWC) memory format for model and views; measured "
                                    "faster on the CPU too (docs/performance.md)")
    compile: bool = opt(False, "torch.compile the model (slow first steps; needs a C++ compiler on CPU)")


@dataclass
class EvalConfig:
    knn_k: int = opt(5, "k of the end-of-training k-NN (paper: 5, majority vote)", min=1)
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

def _allowed(tp) -> Optional[tuple]:
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    return None


def _coerce(key: str, value: Any, tp, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0], meta)
    allowed = _allowed(tp)
    if allowed is not None:
        if not any(value == a and type(value) is type(a) for a in allowed):  # 1 is not True
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        _check_range(key, value, meta)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        _check_range(key, value, meta)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is list:  # list[Literal[...]]: any length, every item checked
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, e.g. [a, b], got {value!r}")
        return [_coerce(key, v, typing.get_args(tp)[0], meta) for v in value]
    if tp is list:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConfigError(f"{key}: expected a list of two numbers [view1, view2], got {value!r}")
        return [_coerce(key, v, float, meta) for v in value]
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - a bug in this file


def _check_range(key, value, meta):
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("exclusive_min") and value == lo)):
        op = ">" if meta.get("exclusive_min") else ">="
        raise ConfigError(f"{key}: {value} is out of range; it must be {op} {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: {value} is out of range; it must be <= {hi}")


def _build(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{prefix}{key}: unknown key; allowed keys here: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", value, tp, fields[name].metadata)
    return cls(**kwargs)


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
        if len(path) != 2:
            raise ConfigError(f"override {text!r}: keys have the form section.key, e.g. train.epochs=10; "
                              f"sections: {', '.join(f.name for f in dataclasses.fields(Config))}")
        section = out.setdefault(path[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"{path[0]}: expected a mapping")
        section[path[1]] = value
    return out


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
    cfg = _build(Config, _fix_yaml_floats(values or {}), "")
    fill_method_defaults(cfg.method)
    validate(cfg, check_paths)
    return cfg


def fill_method_defaults(m: MethodConfig) -> None:
    """Replace None in method-dependent keys with the method's default (METHOD_DEFAULTS)."""
    for key, defaults in METHOD_DEFAULTS.items():
        if getattr(m, key) is None and m.name in defaults:
            setattr(m, key, defaults[m.name])


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
    if d.source in ("imagefolder", "cifar10", "cifar100", "stl10") and not d.root:
        raise ConfigError(f"data.root: required for data.source={d.source}; give the data folder, "
                          "e.g. data.root=../shared/data/cifar10")
    if check_paths and d.root and d.source != "digits":
        root = Path(d.root).expanduser()
        if not root.exists() and not (d.download and d.source != "imagefolder"):
            hint = " or set data.download=true" if d.source != "imagefolder" else ""
            raise ConfigError(f"data.root: folder {root} does not exist; give an existing folder{hint}")
    if cfg.augment.crop_scale_min > cfg.augment.crop_scale_max:
        raise ConfigError("augment.crop_scale_min: must not exceed augment.crop_scale_max")
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"train.device: {dev!r} is not allowed; choose auto, cpu, cuda or cuda:N")
    validate_head_and_sparsity(cfg)
    validate_method(cfg)
    from .data.views import inactive_ops  # here: views imports this module
    if (idle := inactive_ops(cfg.augment)):
        raise ConfigError(f"augment.ops: lists {', '.join(idle)}, which the {cfg.augment.recipe} recipe "
                          f"and augment.* settings switch off; {INACTIVE_OP_FIX[idle[0]]}")


# What turns each augmentation op on, for the error of an op listed in augment.ops but switched off.
INACTIVE_OP_FIX = {
    "crop": "set augment.crop_scale_min below 1, e.g. augment.crop_scale_min=0.08",
    "blur": "set augment.blur_p, e.g. augment.blur_p=[0.5,0.5] (lightly's default, used by papers/002)",
    "color_drop": "set augment.grayscale_p, e.g. augment.grayscale_p=0.2",
    "color_distort": "set augment.jitter_p and augment.color_strength above 0, e.g. augment.jitter_p=0.8",
    "flip": "set augment.flip_p, e.g. augment.flip_p=0.5",
    "solarize": "set augment.solarize_p, e.g. augment.solarize_p=[0.0,0.2]",
}
# Heads whose map has no trainable weight with meaningful column groups (see heads.linear_layers).
HEADS_WITHOUT_SPARSEHEAD = ("identity", "lowrank", "lowrank_diagonal", "orthogonal")


def sparsity_active(s: SparsityConfig) -> bool:
    """Whether SparseHead acts on the head at all: a penalty, a proximal step or pruning."""
    return s.lam > 0 or s.mode == "prune"


def validate_head_and_sparsity(cfg: Config) -> None:
    h, s = cfg.head, cfg.sparsity
    if sparsity_active(s) and h.kind in HEADS_WITHOUT_SPARSEHEAD:
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
    if h.rank is not None and h.kind in ("lowrank", "lowrank_diagonal"):
        # backbones.WidthResNet.feature_dim, without importing torchvision here
        in_dim = 8 * cfg.model.width * (4 if cfg.model.backbone == "resnet50" else 1)
        if h.rank > in_dim:
            raise ConfigError(f"head.rank: {h.rank} exceeds the {in_dim} features of "
                              f"{cfg.model.backbone} width {cfg.model.width}; choose 1..{in_dim}")


def validate_method(cfg: Config) -> None:
    m = cfg.method
    if m.loss != "nt_xent" and m.name != "simclr":
        raise ConfigError(f"method.loss: {m.loss} is a SimCLR loss; set method.name=simclr or "
                          "method.loss=nt_xent")
    keys_per_image = 2 if m.moco_symmetric else 1
    keys_per_step = cfg.train.batch_size * keys_per_image
    if m.name == "moco_v2" and m.queue_size < keys_per_step:
        raise ConfigError(f"method.queue_size: {m.queue_size} is smaller than the {keys_per_step} keys "
                          f"enqueued per step; set method.queue_size>={keys_per_step} or lower train.batch_size")
    if cfg.data.subset is not None and (problem := data_size_problem(cfg, cfg.data.subset)):
        raise ConfigError(problem)
    if sparsity_active(cfg.sparsity) and m.name == "directclr":
        key, off = ("sparsity.lam", "sparsity.lam=0") if cfg.sparsity.lam > 0 else ("sparsity.mode", "sparsity.mode=penalty")
        raise ConfigError(f"{key}: method.name=directclr has no projection head for SparseHead "
                          f"(it ignores head.*); set {off} or choose another method.name")


def data_size_problem(cfg: Config, num_images: int) -> Optional[str]:
    """What is wrong with training `cfg` on `num_images` images beyond the batch size (None: nothing).
    Checked on data.subset before any work, and on the loaded data set by the training loop."""
    m = cfg.method
    keys_per_image = 2 if m.moco_symmetric else 1
    if m.name == "moco_v2" and m.queue_size >= num_images * keys_per_image:
        return (f"method.queue_size: {m.queue_size} keys span all {num_images} training images, so older "
                f"keys of an image would be its own negatives; set method.queue_size<{num_images * keys_per_image}")
    return None


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save(cfg: Config, path: str | os.PathLike) -> None:
    from .io import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe() -> str:
    """Every key with its type, default and help: the body of `sparsehead pretrain --help`."""
    lines = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        lines.append(f"{section.name}:")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            allowed = _allowed(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            tp = hints[f.name]
            optional = typing.get_origin(tp) is typing.Union
            if optional:
                tp = next(a for a in typing.get_args(tp) if a is not type(None))
            kind = "|".join(map(str, allowed)) if allowed else getattr(tp, "__name__", str(tp))
            kind += " or null" if optional else ""
            lines.append(f"  {section.name}.{f.name} ({kind}, default {default}): {f.metadata['help']}")
    return "\n".join(lines)
