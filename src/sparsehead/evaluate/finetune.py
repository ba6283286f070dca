"""Training a linear classifier on augmented images, with the backbone frozen or fine-tuned.

Shared by the semi-supervised protocol (backbone and classifier, separate learning rates) and
the classic linear-evaluation recipe (frozen backbone, SGD over augmented images). SGD with
momentum and a cosine schedule stepped per batch, as the reference recipes do.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from sparsehead.config import AugmentConfig
from sparsehead.core.signals import StopSignals
from sparsehead.data.evalset import EVAL_BATCH, EvalSet
from sparsehead.data.views import ViewGenerator
from sparsehead.evaluate.linear import topk_accuracy
from sparsehead.evaluate.progress import STOP_SIGNALS, ClassifierState, Progress


@dataclass
class SGDRecipe:
    epochs: int
    batch_size: int
    lr_head: float
    lr_backbone: Optional[float]  # None: the backbone stays frozen (eval mode, no gradient)
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0


def crop_flip(augment: AugmentConfig) -> AugmentConfig:
    """The run's crop and flip without colour, blur or solarisation: linear-evaluation views."""
    return dataclasses.replace(
        augment, recipe="simclr", jitter_p=0.0, grayscale_p=0.0, blur_p=[0.0, 0.0], solarize_p=[0.0, 0.0]
    )


def train_classifier(
    backbone: nn.Module,
    data: EvalSet,
    indices: Optional[Sequence[int]],
    num_classes: int,
    views: ViewGenerator,
    recipe: SGDRecipe,
    device: torch.device,
    progress: Optional[Progress] = None,
) -> tuple[nn.Module, nn.Linear]:
    """A copy of `backbone` (fine-tuned or frozen, per the recipe) and a new linear classifier
    trained on the images `indices` of `data` (all by default; their evaluation crops, uint8) under
    `views`' first-view augmentation. `backbone` is untouched. With `progress`, the training saves
    its state there at each epoch's end and on a stop signal (then raises Interrupted), and
    continues from it when it is there."""
    chosen = torch.arange(len(data)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    labels = data.labels[chosen]
    backbone = copy.deepcopy(backbone).to(device)
    frozen = recipe.lr_backbone is None
    backbone.train(not frozen).requires_grad_(not frozen)
    with torch.random.fork_rng(devices=[]):  # its initial weights from the recipe's seed alone
        torch.manual_seed(recipe.seed)
        classifier = nn.Linear(backbone.feature_dim, num_classes).to(device)
    groups = [{"params": classifier.parameters(), "lr": recipe.lr_head}]
    if not frozen:
        groups.append({"params": backbone.parameters(), "lr": recipe.lr_backbone})
    optimizer = torch.optim.SGD(groups, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(chosen) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    state = ClassifierState(
        backbone,
        classifier,
        optimizer,
        scheduler,
        augment_rng=torch.Generator(device=device).manual_seed(recipe.seed),
        order_rng=torch.Generator().manual_seed(recipe.seed),
        fine_tuned=not frozen,
    )
    first_epoch, first_batch = progress.restore(state) if progress else (0, 0)
    with StopSignals(STOP_SIGNALS if progress else []) as stop:
        for epoch in range(first_epoch, recipe.epochs):
            order_at_start = state.order_rng.get_state()
            # Near-equal batches: never a last batch of one image, which BatchNorm cannot train on.
            parts = torch.randperm(len(chosen), generator=state.order_rng).tensor_split(steps_per_epoch)
            plan = [chosen[p].tolist() for p in parts[first_batch:]]
            for batch, idx, images in zip(
                range(first_batch, steps_per_epoch), parts[first_batch:], data.eval_plan(plan)
            ):
                x = views.view(images.to(device).float().div_(255), 0, state.augment_rng)
                with torch.set_grad_enabled(not frozen):
                    r = backbone(x)
                loss = F.cross_entropy(classifier(r), labels[idx].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if stop.requested:
                    progress.save(state, epoch, batch + 1, order_at_start)
                    raise progress.interrupted(stop.requested, epoch, recipe.epochs)
            first_batch = 0
            if progress:
                progress.save(state, epoch + 1, 0, state.order_rng.get_state())
    if progress:
        progress.finish()
    return backbone.eval(), classifier.eval()


@torch.no_grad()
def classifier_accuracy(
    backbone: nn.Module,
    classifier: nn.Module,
    data: EvalSet,
    views: ViewGenerator,
    device: torch.device,
    batch_size: int = EVAL_BATCH,
) -> dict[str, float]:
    """Top-1 and top-5 of backbone + classifier on the un-augmented images of `data`."""
    logits = torch.cat(
        [classifier(backbone(views.prepare(images.to(device)))).cpu() for images in data.eval_batches(batch_size)]
    )
    return topk_accuracy(logits, data.labels.cpu(), ks=(1, 5))
