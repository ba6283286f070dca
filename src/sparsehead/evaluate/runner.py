"""`sparsehead evaluate`: one protocol on a trained checkpoint, its numbers saved in the run folder.

Every input is checked before any work starts (checkpoint, data set, image size and channels,
labels, k); frozen features are extracted once per checkpoint and data set and cached in
run_dir/features/; the result is written atomically to run_dir/eval/<protocol>.json (with the
checkpoint's name appended for an older checkpoint, and @<source>-<key> for another data set).
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import torch
import torch.nn as nn

from sparsehead import config
from sparsehead.config import KNN_K, KNN_TEMPERATURE, KNN_WEIGHTED_K
from sparsehead.core import options
from sparsehead.core.options import opt
from sparsehead.core.registry import Registry
from sparsehead.data import datasets
from sparsehead.data.datasets import ImageSet
from sparsehead.data.views import ViewGenerator
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.evaluate.features import cached_extract, fingerprint
from sparsehead.evaluate.finetune import SGDRecipe, classifier_accuracy, crop_flip, train_classifier
from sparsehead.evaluate.knn import knn_report
from sparsehead.evaluate.linear import WEIGHT_DECAYS, linear_probe
from sparsehead.evaluate.ncc import ncc_classify
from sparsehead.evaluate.semisup import DEFAULT_RECIPE as SEMISUP_RECIPE
from sparsehead.evaluate.semisup import load_or_create_split, semisupervised
from sparsehead.runs import checkpoint
from sparsehead.runs.folder import RunDir
from sparsehead.runs.model import TrainedRun, load_trained, resolve_device

LINEAR_RECIPES = ("lbfgs", "sgd-augment")
# The classic linear-evaluation recipe (solo-learn, SimCLR CIFAR): SGD over augmented images.
SGD_AUGMENT_RECIPE = SGDRecipe(epochs=100, batch_size=256, lr_head=0.1, lr_backbone=None)


@dataclass
class EvalOptions:
    """The options of `sparsehead evaluate`, declared once: the CLI's flags, their help and the
    validation come from these fields (options.add_arguments / options.check)."""
    protocol: str = opt("knn", "the evaluation protocol: a name registered in PROTOCOLS (see the list below)")
    with_z: bool = opt(False, "also evaluate the embedding z = h(r) (frozen-feature protocols)")
    device: str = opt("auto", "auto (cuda if available), cpu, cuda, cuda:N")
    resize: bool = opt(False, "accept images of another size than the checkpoint's, resized to it")
    seed: int = opt(0, "validation split, label subsets, fine-tuning")
    # k-NN
    k: int = opt(KNN_K, "neighbours of the majority vote", min=1)
    k_weighted: int = opt(KNN_WEIGHTED_K, "neighbours of the weighted vote", min=1)
    temperature: float = opt(KNN_TEMPERATURE, "weighted vote: exp(sim / T)", min=0.0, exclusive_min=True)
    # linear probe
    linear_recipe: Literal[LINEAR_RECIPES] = opt("lbfgs", "lbfgs (frozen features) or sgd-augment")
    weight_decay: Optional[float] = opt(None, "fixed L2 weight decay (none: chosen on a validation split of "
                                              "the training set)", min=0.0)
    val_fraction: float = opt(0.2, "validation share of the training set", min=0.0, max=1.0,
                              exclusive_min=True, exclusive_max=True)
    # SGD recipes (semisup, linear sgd-augment): None keeps the protocol's default
    fractions: tuple[float, ...] = opt((0.01, 0.1), "label fractions (semisup), e.g. 0.01 for 1% of the labels",
                                       min=0.0, max=1.0, exclusive_min=True)
    epochs: Optional[int] = opt(None, "epochs (semisup 20, sgd-augment 100)", min=1)
    batch_size: Optional[int] = opt(None, "batch size (256)", min=1)
    lr_head: Optional[float] = opt(None, "classifier learning rate (semisup 0.5, sgd-augment 0.1)")
    lr_backbone: Optional[float] = opt(None, "backbone learning rate (semisup 0.005)")
    train_augment: Optional[Literal["run", "crop-flip"]] = opt(
        None, "training views: the run's augmentation (semisup default) or its crop and flip only "
              "(sgd-augment default)")


# Which options each group of `sparsehead evaluate --help` shows.
OPTION_GROUPS = {"knn": ("k", "k_weighted", "temperature"),
                 "linear": ("linear_recipe", "weight_decay", "val_fraction"),
                 "semisup and sgd-augment (default: the protocol's published recipe)":
                     ("fractions", "epochs", "batch_size", "lr_head", "lr_backbone", "train_augment")}


def evaluate(target: str | Path, opts: EvalOptions, data_overrides: tuple[str, ...] = ()) -> tuple[dict, Path]:
    """Run `opts.protocol` on the checkpoint (or newest checkpoint of the run folder) `target`.

    `data_overrides` (data.key=value) evaluate on another data set than the run's. Returns the
    saved record and its path."""
    check_options(opts)
    start = time.perf_counter()
    device = resolve_device(opts.device)
    trained = load_trained(target, device)
    data_cfg = config.with_data_overrides(trained.cfg, data_overrides).data
    train, test = datasets.load(data_cfg, "train"), datasets.load(data_cfg, "test")
    check_data(trained, data_cfg, train, test, opts.resize)
    check_options_for_data(opts, train)

    results = PROTOCOLS.lookup(opts.protocol)(trained, train, test, opts, device)
    data_key = hashlib.sha256((fingerprint(train) + fingerprint(test)).encode()).hexdigest()[:12]
    record = {
        "protocol": opts.protocol, "checkpoint": str(trained.checkpoint_path),
        "step": trained.state.get("step"),
        "data": {**{k: getattr(data_cfg, k) for k in ("source", "root", "image_size", "subset")},
                 "train_images": len(train), "test_images": len(test), "key": data_key},
        "options": protocol_options(opts), **results, "device": str(device),
        "seconds": round(time.perf_counter() - start, 2)}
    path = RunDir(trained.run_dir).write_eval(result_name(trained, opts, data_cfg, data_key, data_overrides), record)
    return record, path


def result_name(trained: TrainedRun, opts: EvalOptions, data_cfg, data_key: str, data_overrides) -> str:
    """<protocol> for the run's newest checkpoint on its own data; otherwise the recipe, the
    checkpoint and/or the data set are named, so the run's headline result is never overwritten."""
    name = opts.protocol
    if opts.protocol == "linear" and opts.linear_recipe != "lbfgs":
        name += f"-{opts.linear_recipe}"
    newest = checkpoint.list_checkpoints(trained.run_dir)
    if not newest or newest[-1].resolve() != trained.checkpoint_path.resolve():
        name += f"-{trained.checkpoint_path.stem}"
    if data_overrides:
        name += f"@{data_cfg.source}-{data_key[:8]}"
    return name


# --- checks, all before any work ----------------------------------------------------------------

def check_options(opts: EvalOptions) -> None:
    """Every option against its declaration, then what involves several of them."""
    options.check(opts, key=options.flag_of)
    run = PROTOCOLS.lookup(opts.protocol)
    if opts.with_z and not run.frozen(opts):
        raise EvaluationError("--with-z applies to the frozen-feature protocols (knn, ncc, linear with "
                              "--linear-recipe lbfgs); semisup and sgd-augment train the backbone's r")


def input_channels(backbone: nn.Module) -> int:
    return next(m for m in backbone.modules() if isinstance(m, nn.Conv2d)).in_channels


def check_data(trained: TrainedRun, data_cfg: config.DataConfig, train: ImageSet, test: ImageSet,
               resize: bool) -> None:
    """The images must be what the checkpoint was trained on: channels, and size unless resize."""
    size = trained.cfg.data.image_size
    channels = input_channels(trained.method.backbone)
    if data_cfg.image_size != size and not resize:
        raise EvaluationError(
            f"data.image_size={data_cfg.image_size}, but {trained.checkpoint_path.name} was trained on "
            f"{size}x{size} images; drop the override, or pass --resize to resize the images to {size}x{size}")
    for split, data in (("train", train), ("test", test)):
        c, h, w = data.images.shape[1:]
        if c != channels:
            raise EvaluationError(f"the {split} images have {c} channel(s), but the checkpoint's backbone "
                                  f"takes {channels}; evaluate it on {channels}-channel images")
        # The run's own source at its native size is what pretraining saw (e.g. 8x8 digits at 16).
        if (h, w) != (size, size) and data_cfg.source != trained.cfg.data.source and not resize:
            raise EvaluationError(
                f"the {split} images of data.source={data_cfg.source} are {h}x{w}, but the checkpoint was "
                f"trained on {size}x{size} images; use a data set of that size, or pass --resize")
        if (data.labels < 0).any():
            raise EvaluationError(f"the {split} split has unlabeled images; evaluation needs labels on "
                                  "both train and test")
    if len(train) == 0 or len(test) == 0:
        raise EvaluationError("the train or test split is empty")


def check_options_for_data(opts: EvalOptions, train: ImageSet) -> None:
    if opts.protocol != "knn":
        return
    for flag, k in (("--k", opts.k), ("--k-weighted", opts.k_weighted)):
        if k > len(train):
            raise EvaluationError(f"{flag} {k} is larger than the training set ({len(train)} images); "
                                  f"choose {flag} <= {len(train)}")


def protocol_options(opts: EvalOptions) -> dict:
    """The settings that produced the numbers, defaults resolved, for the saved record."""
    if opts.protocol == "knn":
        return {"k": opts.k, "k_weighted": opts.k_weighted, "temperature": opts.temperature}
    if opts.protocol == "ncc":
        return {}
    if opts.protocol == "linear" and opts.linear_recipe == "lbfgs":
        return {"linear_recipe": "lbfgs",
                "weight_decay": "validation" if opts.weight_decay is None else opts.weight_decay,
                "val_fraction": opts.val_fraction, "seed": opts.seed}
    if opts.protocol == "linear":
        return {"linear_recipe": opts.linear_recipe, "train_augment": opts.train_augment or "crop-flip",
                **dataclasses.asdict(sgd_recipe(SGD_AUGMENT_RECIPE, opts))}
    return {"fractions": list(opts.fractions), "train_augment": opts.train_augment or "run",
            **dataclasses.asdict(sgd_recipe(SEMISUP_RECIPE, opts))}


# --- the protocols ------------------------------------------------------------------------------

PROTOCOLS = Registry("protocol", "--protocol")


def protocol(name: str, summary: str, frozen: Callable[[EvalOptions], bool] = lambda opts: True):
    """Register `fn(trained, train, test, opts, device) -> {"r": ..., ["z": ...]}` as protocol `name`;
    `summary`: its line in `sparsehead evaluate --help`; `frozen(opts)`: whether it evaluates frozen
    features (so --with-z applies)."""
    def decorate(fn):
        fn.frozen, fn.summary = frozen, summary
        return PROTOCOLS.register(name)(fn)
    return decorate


def frozen_features(trained: TrainedRun, train: ImageSet, test: ImageSet, device,
                    with_z: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"r": (train, test)} and, with_z, {"z": ...}: cached per checkpoint and data set."""
    cache = RunDir(trained.run_dir).features_dir
    extract = lambda data, split: cached_extract(trained.method, data, trained.views, device,
                                                 trained.checkpoint_path, cache, split)
    (r_tr, z_tr), (r_te, z_te) = extract(train, "train"), extract(test, "test")
    return {"r": (r_tr, r_te), **({"z": (z_tr, z_te)} if with_z else {})}


@protocol("knn", "cosine k-NN: k=5 majority vote (the SparseHead paper) and k=200 weighted exp(sim/0.1) "
                 "(InstDisc/MoCo monitor)")
def run_knn(trained, train, test, opts, device) -> dict:
    out = {}
    for name, (xtr, xte) in frozen_features(trained, train, test, device, opts.with_z).items():
        xtr, xte = xtr.to(device), xte.to(device)
        out[name] = knn_report(xtr, train.labels, xte, test.labels, opts.k, opts.k_weighted, opts.temperature)
    return out


@protocol("ncc", "nearest class centre, raw and L2-normalised features")
def run_ncc(trained, train, test, opts, device) -> dict:
    out = {}
    for name, (xtr, xte) in frozen_features(trained, train, test, device, opts.with_z).items():
        xtr = xtr.to(device)
        acc = lambda norm: (ncc_classify(xtr, train.labels, xte, norm).cpu() == test.labels).float().mean().item()
        out[name] = {"top1": acc(False), "normalized_top1": acc(True)}
    return out


def sgd_recipe(default: SGDRecipe, opts: EvalOptions) -> SGDRecipe:
    given = {"epochs": opts.epochs, "batch_size": opts.batch_size, "lr_head": opts.lr_head,
             "seed": opts.seed}
    if default.lr_backbone is not None:
        given["lr_backbone"] = opts.lr_backbone
    return dataclasses.replace(default, **{k: v for k, v in given.items() if v is not None})


def training_views(trained: TrainedRun, augment: str) -> ViewGenerator:
    cfg = trained.cfg.augment if augment == "run" else crop_flip(trained.cfg.augment)
    return ViewGenerator(cfg, trained.cfg.data.image_size, trained.state["data_mean"], trained.state["data_std"])


@protocol("linear", "logistic regression on standardised frozen features, weight decay chosen on a validation "
                    "split of the training set (full-batch L-BFGS); or the classic SGD over augmented images "
                    "(--linear-recipe sgd-augment, 100 epochs)", frozen=lambda opts: opts.linear_recipe == "lbfgs")
def run_linear(trained, train, test, opts, device) -> dict:
    if opts.linear_recipe == "sgd-augment":
        views = training_views(trained, opts.train_augment or "crop-flip")
        num_classes = int(max(train.labels.max(), test.labels.max())) + 1
        backbone, classifier = train_classifier(trained.method.backbone, train.images, train.labels,
                                                num_classes, views, sgd_recipe(SGD_AUGMENT_RECIPE, opts),
                                                device)
        return {"r": classifier_accuracy(backbone, classifier, test.images, test.labels, trained.views,
                                         device)}
    decays = WEIGHT_DECAYS if opts.weight_decay is None else (opts.weight_decay,)
    return {name: linear_probe(xtr, train.labels, xte, test.labels, weight_decays=decays,
                               val_fraction=opts.val_fraction, seed=opts.seed, device=device)
            for name, (xtr, xte) in frozen_features(trained, train, test, device, opts.with_z).items()}


@protocol("semisup", "fine-tune backbone + linear classifier on class-balanced 1% and 10% label subsets (saved "
                     "in RUN/splits/); 20 epochs, lr 0.005 / 0.5, SGD, cosine", frozen=lambda opts: False)
def run_semisup(trained, train, test, opts, device) -> dict:
    views = training_views(trained, opts.train_augment or "run")
    recipe = sgd_recipe(SEMISUP_RECIPE, opts)
    out = {}
    for fraction in opts.fractions:
        indices = load_or_create_split(trained.run_dir, fingerprint(train), train.labels, fraction, opts.seed)
        out[f"{fraction * 100:g}pct"] = semisupervised(trained.method.backbone, train, test, indices,
                                                       views, recipe, device)
    return {"r": out}


