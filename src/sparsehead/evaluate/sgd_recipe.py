"""The options and helpers of the two protocols that train on augmented images: semisup and
linear with --linear-recipe sgd-augment or sgd-imagenet. Each has a published SGD recipe (an SGDRecipe); these
options override parts of it, and None keeps the protocol's default."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

from sparsehead.core.options import opt
from sparsehead.data.evalset import EvalSet
from sparsehead.data.views import ViewGenerator
from sparsehead.evaluate.finetune import SGDRecipe, crop_flip
from sparsehead.evaluate.progress import Progress
from sparsehead.evaluate.protocol import AssembledOptions
from sparsehead.runs.folder import RunDir
from sparsehead.runs.model import TrainedRun

HELP_GROUP = "semisup, sgd-augment and sgd-imagenet (default: the protocol's published recipe)"


@dataclass
class SGDRecipeOptions:
    help_group: ClassVar[str] = HELP_GROUP
    epochs: Optional[int] = opt(None, "epochs (semisup 20, sgd-augment and sgd-imagenet 100)", min=1)
    batch_size: Optional[int] = opt(None, "batch size (256)", min=1)
    lr_head: Optional[float] = opt(None, "classifier learning rate (semisup 0.5, sgd-augment 0.1, sgd-imagenet 0.3)")
    lr_backbone: Optional[float] = opt(None, "backbone learning rate (semisup 0.005)")
    train_augment: Optional[Literal["run", "crop-flip"]] = opt(
        None,
        "training views: the run's augmentation (semisup default) or its crop and flip only (the linear "
        "recipes' default)",
    )


def sgd_recipe(default: SGDRecipe, opts: AssembledOptions) -> SGDRecipe:
    """`default` with the options given; a frozen-backbone recipe stays frozen (no lr_backbone)."""
    given = {"epochs": opts.epochs, "batch_size": opts.batch_size, "lr_head": opts.lr_head, "seed": opts.seed}
    if default.lr_backbone is not None:
        given["lr_backbone"] = opts.lr_backbone
    return dataclasses.replace(default, **{k: v for k, v in given.items() if v is not None})


def recipe_settings(default: SGDRecipe, default_augment: str, opts: AssembledOptions) -> dict:
    """The training views and the resolved recipe, for the saved record."""
    return {"train_augment": opts.train_augment or default_augment, **dataclasses.asdict(sgd_recipe(default, opts))}


def progress_of(trained: TrainedRun, train: EvalSet, test: EvalSet, name: str, settings: dict) -> Progress:
    """Where the training of result `name` keeps its progress (evaluate/progress.py): keyed by the
    checkpoint file, both data sets and the resolved settings, so no other job continues it."""
    st = trained.checkpoint_path.stat()
    job = {
        "checkpoint": [str(trained.checkpoint_path.resolve()), st.st_size, st.st_mtime_ns],
        "data": [train.fingerprint(), test.fingerprint()],
        "settings": settings,
    }
    key = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
    return Progress(RunDir(trained.run_dir).eval_dir / "progress" / f"{name}-{key}.pt", key)


def training_views(trained: TrainedRun, augment: str) -> ViewGenerator:
    """The run's own augmentation ("run"), or only its crop and flip ("crop-flip")."""
    cfg = trained.cfg.augment if augment == "run" else crop_flip(trained.cfg.augment)
    return ViewGenerator(cfg, trained.cfg.data.image_size, trained.state["data_mean"], trained.state["data_std"])
