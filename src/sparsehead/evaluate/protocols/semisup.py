"""`--protocol semisup`: fine-tuning on a small labelled subset of the training set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sparsehead.core.options import opt
from sparsehead.evaluate.features import fingerprint
from sparsehead.evaluate.protocols.base import Protocol
from sparsehead.evaluate.protocols.sgd_recipe import (
    HELP_GROUP,
    SGDRecipeOptions,
    recipe_settings,
    sgd_recipe,
    training_views,
)
from sparsehead.evaluate.semisup import DEFAULT_RECIPE, load_or_create_split, semisupervised


@dataclass
class SemisupOptions:
    help_group: ClassVar[str] = HELP_GROUP
    fractions: tuple[float, ...] = opt(
        (0.01, 0.1), "label fractions (semisup), e.g. 0.01 for 1% of the labels", min=0.0, max=1.0, exclusive_min=True
    )


class SemisupProtocol(Protocol):
    """Backbone + linear classifier fine-tuned on each class-balanced label subset, then tested.

    Source: the 1% / 10% semi-supervised evaluation of Song et al. 2023 (arXiv 2307.08913)
    Table 2, with a fine-tuning recipe after Barlow Twins (Zbontar et al. 2021, arXiv 2103.03230):
    20 epochs, backbone lr 0.005, classifier lr 0.5, SGD momentum 0.9, cosine schedule, no weight
    decay (evaluate/semisup.py). The subsets are drawn with --seed and saved in RUN/splits/, not
    the published ImageNet subset lists.
    """

    name = "semisup"
    summary = (
        "fine-tune backbone + linear classifier on class-balanced 1% and 10% label subsets (saved "
        "in RUN/splits/); 20 epochs, lr 0.005 / 0.5, SGD, cosine"
    )
    Options = SemisupOptions
    shared_options = (SGDRecipeOptions,)

    def uses_frozen_features(self, opts) -> bool:
        return False

    def settings(self, opts) -> dict:
        return {"fractions": list(opts.fractions), **recipe_settings(DEFAULT_RECIPE, "run", opts)}

    def run(self, trained, train, test, opts, device) -> dict:
        views = training_views(trained, opts.train_augment or "run")
        recipe = sgd_recipe(DEFAULT_RECIPE, opts)
        out = {}
        for fraction in opts.fractions:
            indices = load_or_create_split(trained.run_dir, fingerprint(train), train.labels, fraction, opts.seed)
            out[f"{fraction * 100:g}pct"] = semisupervised(
                trained.method.backbone, train, test, indices, views, recipe, device
            )
        return {"r": out}
