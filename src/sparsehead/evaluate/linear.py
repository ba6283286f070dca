"""`--protocol linear`: a linear classifier on the frozen backbone, by one of three recipes.

The default recipe (lbfgs) is a probe on frozen features: multinomial logistic regression solved to
convergence by full-batch L-BFGS (logistic.py). The reference recipes train a linear layer with SGD
for 100 epochs over augmented images; what must match is the result (formulas: docs/references.md,
evaluation), and this convex problem solved to convergence takes a few dozen passes over the
features. Features are standardised with training statistics; the L2 weight decay is chosen on a
stratified validation split carved from the training set (never the test set), then the classifier
is refit on the whole training set with that weight decay. The SGD recipes (sgd-augment,
sgd-imagenet) train the linear layer over augmented images instead (finetune.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, Sequence

import numpy as np
import torch

from sparsehead.core.options import opt
from sparsehead.data.evalset import EvalSet
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.evaluate.finetune import SGDRecipe, classifier_accuracy, train_classifier
from sparsehead.evaluate.logistic import (
    FeatureRows,
    chunk_rows,
    feature_spectrum,
    feature_stats,
    fit_logistic,
    probe_accuracy,
)
from sparsehead.evaluate.protocol import AssembledOptions, Protocol, frozen_features
from sparsehead.evaluate.sgd_recipe import SGDRecipeOptions, progress_of, recipe_settings, sgd_recipe, training_views
from sparsehead.runs.model import TrainedRun

# Half-decade steps, from strong to weak regularisation (each fit warm-starts the next one).
WEIGHT_DECAYS = tuple(float(10.0**e) for e in np.arange(0.0, -6.5, -0.5))


def stratified_validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices into the training set, each class split in the same proportion."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    present = counts[counts > 0]
    if present.min() < 2:
        raise EvaluationError(
            f"class {int(np.flatnonzero(counts == present.min())[0])} has a single training sample; the "
            "linear probe needs at least 2 per class to carve a validation split (give --weight-decay "
            "to skip the search)"
        )
    n_val = max(round(fraction * len(y)), len(present))  # at least one sample per class
    return train_test_split(np.arange(len(y)), test_size=n_val, random_state=seed, stratify=y)


def select_weight_decay(
    data: FeatureRows,
    num_classes: int,
    weight_decays: Sequence[float],
    val_fraction: float,
    seed: int,
    patience: int,
    **fit_options,
) -> tuple[float, dict, tuple]:
    """The weight decay with the best top-1 on a stratified validation split of the rows of `data`.

    Walks `weight_decays` from the strongest to the weakest, each fit warm-started from the
    previous one, and stops once `patience` values in a row score below the best. Returns
    the choice (ties: the stronger), every value's validation top-1, and the chosen fit."""
    fit_idx, val_idx = (
        torch.as_tensor(i) for i in stratified_validation_split(data.y.cpu().numpy(), val_fraction, seed)
    )
    split = {"fit": fit_idx, "val": val_idx}
    fit, val = (FeatureRows(data.x, data.y, split[part], None, data.device, data.chunk) for part in ("fit", "val"))
    # Statistics of the fitting part only: the validation part plays the test set's role.
    stats = feature_stats(fit)
    fit, val = fit.with_stats(stats), val.with_stats(stats)
    spectrum = feature_spectrum(fit)
    validation, best, chosen, path, since_best = {}, None, None, None, 0
    for wd in sorted(weight_decays, reverse=True):
        w, b, _ = fit_logistic(fit, None, num_classes, wd, path, spectrum, **fit_options)
        path = (w, b)
        validation[wd] = probe_accuracy(val, w, b, ks=(1,))["top1"]
        if best is None or validation[wd] > validation[best]:
            best, chosen, since_best = wd, path, 0
        elif validation[wd] < validation[best]:  # a tie is a plateau, not a decline
            since_best += 1
            if since_best >= patience:
                break
        else:
            since_best = 0
    return best, validation, chosen


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    val_fraction: float = 0.2,
    seed: int = 0,
    patience: int = 3,
    device: torch.device | str = "cpu",
    max_iter: int = 1000,
    tolerance: float = 1e-6,
    chunk: Optional[int] = None,
) -> dict:
    """Top-1/top-5 test accuracy of the probe, the weight decay chosen on a validation split of
    the training set (select_weight_decay; a single value skips the search), then refit on the
    whole training set. Features may live on any device; the fits run on `device`, `chunk` rows
    at a time (default: chunk_rows, all at once where they fit)."""
    start = time.perf_counter()
    device = torch.device(device)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    chunk = chunk or chunk_rows(len(train_x), train_x.shape[1], device)
    if chunk is None:  # they fit: moved to the device once
        train_x, test_x = train_x.to(device), test_x.to(device)
    train = FeatureRows(train_x, train_y.long(), None, None, device, chunk)
    test = FeatureRows(test_x, test_y.long(), None, None, device, chunk)
    fit_options = dict(max_iter=max_iter, tolerance=tolerance)
    validation, init = {}, None
    if len(set(weight_decays)) > 1:
        best, validation, init = select_weight_decay(
            train, num_classes, set(weight_decays), val_fraction, seed, patience, **fit_options
        )
    else:
        best = float(next(iter(weight_decays)))
    stats = feature_stats(train)
    train, test = train.with_stats(stats), test.with_stats(stats)
    w, b, iters = fit_logistic(train, None, num_classes, best, init, feature_spectrum(train), **fit_options)
    result = probe_accuracy(test, w, b, ks=(1, 5))
    result.update(
        weight_decay=best,
        iterations=iters,
        converged=iters < max_iter,
        validation_top1={f"{wd:g}": acc for wd, acc in validation.items()},
        train_top1=probe_accuracy(train, w, b, ks=(1,))["top1"],
        chunk_rows=train.chunk,
        seconds=time.perf_counter() - start,
    )
    return result


# The recipes that train a linear layer by SGD over augmented images of the frozen backbone:
# SimCLR's CIFAR-10 evaluation as solo-learn runs it, and the ImageNet linear evaluation of Barlow
# Twins (facebookresearch/barlowtwins evaluate.py: lr 0.3, weight decay 1e-6, batch 256, 100 epochs).
SGD_RECIPES = {
    "sgd-augment": SGDRecipe(epochs=100, batch_size=256, lr_head=0.1, lr_backbone=None),
    "sgd-imagenet": SGDRecipe(epochs=100, batch_size=256, lr_head=0.3, lr_backbone=None, weight_decay=1e-6),
}
LINEAR_RECIPES = ("lbfgs", *SGD_RECIPES)


@dataclass
class LinearOptions:
    help_group: ClassVar[str] = "linear"
    linear_recipe: Literal[LINEAR_RECIPES] = opt(
        "lbfgs", "lbfgs (frozen features), sgd-augment (SimCLR CIFAR) or sgd-imagenet (Barlow Twins ImageNet)"
    )
    weight_decay: Optional[float] = opt(
        None, "fixed L2 weight decay (none: chosen on a validation split of the training set)", min=0.0
    )
    val_fraction: float = opt(
        0.2, "validation share of the training set", min=0.0, max=1.0, exclusive_min=True, exclusive_max=True
    )


class LinearProtocol(Protocol):
    """Linear evaluation of the frozen backbone r (Song et al. 2023, arXiv 2307.08913, Table 1).

    Source: --linear-recipe lbfgs (default) is the linear evaluation of Kornblith et al. 2019
    (arXiv 1805.08974) that SimCLR (Chen et al. 2020, arXiv 2002.05709) uses for transfer:
    L2-regularised multinomial logistic regression on frozen, un-augmented features, optimised
    with L-BFGS, the weight decay chosen on a validation split held out of the training set and
    the classifier refit on the whole training set; here on standardised features, with a
    half-decade grid (linear_probe). --linear-recipe sgd-augment is SimCLR's CIFAR-10
    linear evaluation as solo-learn runs it: a linear layer on the frozen backbone trained by SGD
    over the run's crop-and-flip views, 100 epochs, batch 256, lr 0.1, momentum 0.9, cosine.
    --linear-recipe sgd-imagenet is the ImageNet linear evaluation of Barlow Twins (Zbontar et al.
    2021, arXiv 2103.03230; facebookresearch/barlowtwins evaluate.py): the same with lr 0.3 and
    weight decay 1e-6, random resized crops and flips for training, the ImageNet centre crop for
    testing (data.eval_crop 0.875 on the ImageNet sources).
    """

    name = "linear"
    summary = (
        "logistic regression on standardised frozen features, weight decay chosen on a validation "
        "split of the training set (full-batch L-BFGS); or the classic SGD over augmented images "
        "(--linear-recipe sgd-augment or sgd-imagenet, 100 epochs)"
    )
    Options = LinearOptions
    shared_options = (SGDRecipeOptions,)

    def uses_frozen_features(self, opts: AssembledOptions) -> bool:
        return opts.linear_recipe == "lbfgs"

    def result_name(self, opts: AssembledOptions) -> str:
        # The SGD recipe's result sits beside linear.json, which stays the L-BFGS probe's.
        return self.name if opts.linear_recipe == "lbfgs" else f"{self.name}-{opts.linear_recipe}"

    def settings(self, opts: AssembledOptions) -> dict:
        if opts.linear_recipe == "lbfgs":
            return {
                "linear_recipe": "lbfgs",
                "weight_decay": "validation" if opts.weight_decay is None else opts.weight_decay,
                "val_fraction": opts.val_fraction,
                "seed": opts.seed,
            }
        return {
            "linear_recipe": opts.linear_recipe,
            **recipe_settings(SGD_RECIPES[opts.linear_recipe], "crop-flip", opts),
        }

    def run(
        self, trained: TrainedRun, train: EvalSet, test: EvalSet, opts: AssembledOptions, device: torch.device
    ) -> dict:
        if opts.linear_recipe in SGD_RECIPES:
            views = training_views(trained, opts.train_augment or "crop-flip")
            num_classes = int(max(train.labels.max(), test.labels.max())) + 1
            progress = progress_of(trained, train, test, self.result_name(opts), self.settings(opts))
            recipe = sgd_recipe(SGD_RECIPES[opts.linear_recipe], opts)
            backbone, classifier = train_classifier(
                trained.method.backbone, train, None, num_classes, views, recipe, device, progress
            )
            accuracy = classifier_accuracy(backbone, classifier, test, trained.views, device)
            progress.finish()  # only once the test set is scored: a stop before continues from the trained state
            return {"r": accuracy}
        decays = WEIGHT_DECAYS if opts.weight_decay is None else (opts.weight_decay,)
        return {
            name: linear_probe(
                xtr,
                train.labels,
                xte,
                test.labels,
                weight_decays=decays,
                val_fraction=opts.val_fraction,
                seed=opts.seed,
                device=device,
            )
            for name, (xtr, xte) in frozen_features(trained, train, test, device, opts.with_z).items()
        }
