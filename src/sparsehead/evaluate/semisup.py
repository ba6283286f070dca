"""`--protocol semisup`, semi-supervised evaluation (formulas: docs/references.md, evaluation): fine-tune
backbone + linear classifier on a 1% / 10% label subset of the training set.

The subset is either listed in a file (split_from_file: SimCLR's ImageNet lists, one file name a
line) or a class-balanced draw, drawn once with a seed and saved as a JSON index list in the run
folder, so every later evaluation (of this run or another checkpoint on the same data) uses the
same images.
Defaults: the Barlow Twins recipe, 20 epochs, backbone lr 0.005, classifier lr 0.5, SGD
momentum 0.9, cosine schedule, no weight decay.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch

from sparsehead.core.atomic import atomic_write_json
from sparsehead.core.options import opt
from sparsehead.data.evalset import EvalSet
from sparsehead.data.views import ViewGenerator
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.evaluate.features import fingerprint
from sparsehead.evaluate.finetune import SGDRecipe, classifier_accuracy, train_classifier
from sparsehead.evaluate.progress import Progress
from sparsehead.evaluate.protocol import AssembledOptions, Protocol
from sparsehead.evaluate.sgd_recipe import (
    HELP_GROUP,
    SGDRecipeOptions,
    progress_of,
    recipe_settings,
    sgd_recipe,
    training_views,
)
from sparsehead.runs.folder import RunDir
from sparsehead.runs.model import TrainedRun

DEFAULT_RECIPE = SGDRecipe(epochs=20, batch_size=256, lr_head=0.5, lr_backbone=0.005)


def balanced_subset(labels: torch.Tensor, fraction: float, seed: int) -> list[int]:
    """Sorted indices of `fraction` of the samples with the same count in every class
    (round(fraction * N / classes), at least 1, at most the class's size)."""
    if not 0 < fraction <= 1:
        raise EvaluationError(f"label fraction {fraction} must be in (0, 1], e.g. 0.01 for 1%")
    y = labels.cpu().numpy()
    classes = np.unique(y)
    per_class = max(1, round(fraction * len(y) / len(classes)))
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(y == c), size=min(per_class, int((y == c).sum())), replace=False) for c in classes
    ]
    return sorted(int(i) for i in np.concatenate(picked))


def split_from_file(path: str | Path, train: EvalSet) -> list[int]:
    """Sorted indices of the training images that `path` lists: one file name a line (the format of
    SimCLR's imagenet_subsets/1percent.txt, e.g. n01440764_10026.JPEG), each matched to the image
    of that file name (a listed path by its last part). Every name must be found, once."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(
            f"--split {path}: no such file; give a list of training image names, one a line "
            "(e.g. SimCLR's imagenet_subsets/1percent.txt)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise EvaluationError(
            f"--split {path}: cannot be read ({reason}); give a text file of training image names, one a line"
        ) from None
    if train.names is None:
        raise EvaluationError(
            "--split lists image files, but this training set was not read from files (data.source="
            "imagefolder or imagenet are); use --fractions for a class-balanced draw"
        )
    listed = {posixpath.basename(line.strip()) for line in text.splitlines()} - {""}
    if not listed:
        raise EvaluationError(f"--split {path} lists no image names; write one file name a line")
    found: dict[str, list[int]] = {}
    for i, name in enumerate(train.names):
        found.setdefault(posixpath.basename(name), []).append(i)
    for problem, names, fix in (
        (
            "are not images of this training set",
            sorted(n for n in listed if n not in found),
            "check that the list belongs to this data set (data.root) and that data.subset keeps them",
        ),
        (
            "name several training images each",
            sorted(n for n in listed if len(found.get(n, ())) > 1),
            "the names of a split file must be unique in the training set",
        ),
    ):
        if names:
            raise EvaluationError(
                f"--split {path}: {len(names)} of its {len(listed)} names {problem}, e.g. {', '.join(names[:5])}; {fix}"
            )
    return sorted(found[n][0] for n in listed)


def split_path(folder: Path, data_key: str, fraction: float, seed: int) -> Path:
    return RunDir(folder).split_path(data_key, fraction, seed)


def load_or_create_split(folder: Path, data_key: str, labels: torch.Tensor, fraction: float, seed: int) -> list[int]:
    """The saved split for this data set, fraction and seed; drawn and saved on first use."""
    path = split_path(folder, data_key, fraction, seed)
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            indices = [int(i) for i in saved["indices"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise EvaluationError(
                f"split file {path} is damaged ({type(err).__name__}); delete it to draw the split again "
                "(the same images for the same --seed)"
            ) from None
        if saved.get("num_train") != len(labels) or not indices or max(indices) >= len(labels):
            raise EvaluationError(
                f"split file {path} does not fit this training set of {len(labels)} "
                "images; delete it to draw a new split"
            )
        return indices
    indices = balanced_subset(labels, fraction, seed)
    atomic_write_json(
        path, {"fraction": fraction, "seed": seed, "data": data_key, "num_train": len(labels), "indices": indices}
    )
    return indices


def semisupervised(
    backbone: torch.nn.Module,
    train: EvalSet,
    test: EvalSet,
    indices: list[int],
    views: ViewGenerator,
    recipe: SGDRecipe,
    device: torch.device,
    progress: Optional[Progress] = None,
) -> dict:
    """Test top-1/top-5 after fine-tuning on train[indices]; `backbone` itself is not modified.
    `progress`: where the fine-tuning saves its state to continue after a stop (evaluate/progress.py)."""
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    tuned, classifier = train_classifier(backbone, train, indices, num_classes, views, recipe, device, progress)
    result = classifier_accuracy(tuned, classifier, test, views, device)
    result["labels_used"] = len(indices)
    return result


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
    decay (DEFAULT_RECIPE). `--split FILE` fine-tunes on the images a file lists: on ImageNet,
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

    def uses_frozen_features(self, opts: AssembledOptions) -> bool:
        return False

    def check_training_set(self, opts: AssembledOptions, train: EvalSet) -> None:
        if opts.split:
            split_from_file(opts.split, train)

    def result_name(self, opts: AssembledOptions) -> str:
        """semisup-<file stem> for a split file: its numbers never replace those of the draws."""
        return f"{self.name}-{Path(opts.split).stem}" if opts.split else self.name

    def settings(self, opts: AssembledOptions) -> dict:
        if opts.split:
            digest = hashlib.sha256(Path(opts.split).read_bytes()).hexdigest()[:16]
            subsets = {"split": str(Path(opts.split).resolve()), "split_sha256": digest}
        else:
            subsets = {"fractions": list(opts.fractions)}
        return {**subsets, **recipe_settings(DEFAULT_RECIPE, "run", opts)}

    def subsets(self, trained: TrainedRun, train: EvalSet, opts: AssembledOptions) -> dict[str, list[int]]:
        """{result key: training indices}: the split file's images under its stem, or each fraction's draw."""
        if opts.split:
            return {Path(opts.split).stem: split_from_file(opts.split, train)}
        return {
            f"{fraction * 100:g}pct": load_or_create_split(
                trained.run_dir, fingerprint(train), train.labels, fraction, opts.seed
            )
            for fraction in opts.fractions
        }

    def run(
        self, trained: TrainedRun, train: EvalSet, test: EvalSet, opts: AssembledOptions, device: torch.device
    ) -> dict:
        views = training_views(trained, opts.train_augment or "run")
        recipe = sgd_recipe(DEFAULT_RECIPE, opts)
        out, done = {}, []
        for key, indices in self.subsets(trained, train, opts).items():
            progress = progress_of(trained, train, test, f"{self.result_name(opts)}-{key}", self.settings(opts))
            out[key] = semisupervised(trained.method.backbone, train, test, indices, views, recipe, device, progress)
            done.append(progress)
        # Each fraction's progress is kept until every fraction is scored: a stop in a later fraction
        # does not train a finished one again (its saved state is at its last epoch).
        for progress in done:
            progress.finish()
        return {"r": out}
