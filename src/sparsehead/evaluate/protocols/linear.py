"""`--protocol linear`: a linear classifier on the frozen backbone, by one of three recipes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

from sparsehead.core.options import opt
from sparsehead.evaluate.finetune import SGDRecipe, classifier_accuracy, train_classifier
from sparsehead.evaluate.linear import WEIGHT_DECAYS, linear_probe
from sparsehead.evaluate.protocols.base import Protocol, frozen_features
from sparsehead.evaluate.protocols.sgd_recipe import (
    SGDRecipeOptions,
    progress_of,
    recipe_settings,
    sgd_recipe,
    training_views,
)

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
    half-decade grid (evaluate/linear.py). --linear-recipe sgd-augment is SimCLR's CIFAR-10
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

    def uses_frozen_features(self, opts) -> bool:
        return opts.linear_recipe == "lbfgs"

    def result_name(self, opts) -> str:
        # The SGD recipe's result sits beside linear.json, which stays the L-BFGS probe's.
        return self.name if opts.linear_recipe == "lbfgs" else f"{self.name}-{opts.linear_recipe}"

    def settings(self, opts) -> dict:
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

    def run(self, trained, train, test, opts, device) -> dict:
        if opts.linear_recipe in SGD_RECIPES:
            views = training_views(trained, opts.train_augment or "crop-flip")
            num_classes = int(max(train.labels.max(), test.labels.max())) + 1
            progress = progress_of(trained, train, test, self.result_name(opts), self.settings(opts))
            recipe = sgd_recipe(SGD_RECIPES[opts.linear_recipe], opts)
            backbone, classifier = train_classifier(
                trained.method.backbone, train, None, num_classes, views, recipe, device, progress
            )
            return {"r": classifier_accuracy(backbone, classifier, test, trained.views, device)}
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
