"""Semi-supervised evaluation (formulas: docs/references.md, evaluation): fine-tune backbone + linear classifier on a
class-balanced 1% / 10% label subset of the training set.

The subsets are drawn once with a seed and saved as JSON index lists in the run folder, so every
later evaluation (of this run or another checkpoint on the same data) uses the same images.
Defaults: the Barlow Twins recipe, 20 epochs, backbone lr 0.005, classifier lr 0.5, SGD
momentum 0.9, cosine schedule, no weight decay.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from sparsehead.core.atomic import atomic_write_json
from sparsehead.data.evalset import EvalSet
from sparsehead.data.views import ViewGenerator
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.evaluate.finetune import SGDRecipe, classifier_accuracy, train_classifier
from sparsehead.runs.folder import RunDir

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


def split_path(folder: Path, data_key: str, fraction: float, seed: int) -> Path:
    return RunDir(folder).split_path(data_key, fraction, seed)


def load_or_create_split(folder: Path, data_key: str, labels: torch.Tensor, fraction: float, seed: int) -> list[int]:
    """The saved split for this data set, fraction and seed; drawn and saved on first use."""
    path = split_path(folder, data_key, fraction, seed)
    if path.is_file():
        saved = json.loads(path.read_text())
        indices = saved["indices"]
        if saved.get("num_train") != len(labels) or max(indices) >= len(labels):
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
) -> dict:
    """Test top-1/top-5 after fine-tuning on train[indices]; `backbone` itself is not modified."""
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    tuned, classifier = train_classifier(backbone, train, indices, num_classes, views, recipe, device)
    result = classifier_accuracy(tuned, classifier, test, views, device)
    result["labels_used"] = len(indices)
    return result
