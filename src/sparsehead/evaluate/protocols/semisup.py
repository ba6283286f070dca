"""`--protocol semisup`: fine-tuning on a small labelled subset of the training set."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from sparsehead.core.options import opt
from sparsehead.evaluate.features import fingerprint
from sparsehead.evaluate.protocols.base import Protocol
from sparsehead.evaluate.protocols.sgd_recipe import (
    HELP_GROUP,
    SGDRecipeOptions,
    progress_of,
    recipe_settings,
    sgd_recipe,
    training_views,
)
from sparsehead.evaluate.semisup import DEFAULT_RECIPE, load_or_create_split, semisupervised, split_from_file


@dataclass
class SemisupOptions:
    help_group: ClassVar[str] = HELP_GROUP
    fractions: tuple[float, ...] = opt(
        (0.01, 0.1), "label fractions (semisup), e.g. 0.01 for 1% of the labels", min=0.0, max=1.0, exclusive_min=True
    )
    split: Optional[str] = opt(
        None,
        "a file of training image names, one a line (SimCLR's imagenet_subsets/1percent.txt): fine-tune "
        "on exactly those images instead of --fractions' class-balanced draws",
    )


class SemisupProtocol(Protocol):
    """Backbone + linear classifier fine-tuned on each class-balanced label subset, then tested.

    Source: the 1% / 10% semi-supervised evaluation of Song et al. 2023 (arXiv 2307.08913)
    Table 2, with a fine-tuning recipe after Barlow Twins (Zbontar et al. 2021, arXiv 2103.03230):
    20 epochs, backbone lr 0.005, classifier lr 0.5, SGD momentum 0.9, cosine schedule, no weight
    decay (evaluate/semisup.py). `--split FILE` fine-tunes on the images a file lists: on ImageNet,
    the fixed 1% / 10% lists of SimCLR (Chen et al. 2020) that papers use; otherwise the subsets
    are class-balanced draws with --seed, saved in RUN/splits/.
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

    def check_training_set(self, opts, train) -> None:
        if opts.split:
            split_from_file(opts.split, train)

    def result_name(self, opts) -> str:
        """semisup-<file stem> for a split file: its numbers never replace those of the draws."""
        return f"{self.name}-{Path(opts.split).stem}" if opts.split else self.name

    def settings(self, opts) -> dict:
        if opts.split:
            digest = hashlib.sha256(Path(opts.split).read_bytes()).hexdigest()[:16]
            subsets = {"split": str(Path(opts.split).resolve()), "split_sha256": digest}
        else:
            subsets = {"fractions": list(opts.fractions)}
        return {**subsets, **recipe_settings(DEFAULT_RECIPE, "run", opts)}

    def subsets(self, trained, train, opts) -> dict[str, list[int]]:
        """{result key: training indices}: the split file's images under its stem, or each fraction's draw."""
        if opts.split:
            return {Path(opts.split).stem: split_from_file(opts.split, train)}
        return {
            f"{fraction * 100:g}pct": load_or_create_split(
                trained.run_dir, fingerprint(train), train.labels, fraction, opts.seed
            )
            for fraction in opts.fractions
        }

    def run(self, trained, train, test, opts, device) -> dict:
        views = training_views(trained, opts.train_augment or "run")
        recipe = sgd_recipe(DEFAULT_RECIPE, opts)
        out = {}
        for key, indices in self.subsets(trained, train, opts).items():
            progress = progress_of(trained, train, test, f"{self.result_name(opts)}-{key}", self.settings(opts))
            out[key] = semisupervised(trained.method.backbone, train, test, indices, views, recipe, device, progress)
        return {"r": out}
