"""Training a linear classifier on augmented images, with the backbone frozen or fine-tuned.

Shared by the semi-supervised protocol (backbone and classifier, separate learning rates) and
the classic linear-evaluation recipe (frozen backbone, SGD over augmented images). SGD with
momentum and a cosine schedule stepped per batch, as the reference recipes do.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from sparsehead.config import AugmentConfig
from sparsehead.core import distributed as dist
from sparsehead.core.signals import StopFlag, StopSignals
from sparsehead.core.sync_batchnorm import convert_sync_batchnorm
from sparsehead.data.evalset import EVAL_BATCH, EvalSet, chunks
from sparsehead.data.views import ViewGenerator
from sparsehead.evaluate.logistic import topk_hits
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
    continues from it when it is there.

    Under DDP each process takes its share of every batch (the same batches as one process would
    make), the gradients are averaged by DistributedDataParallel, and a fine-tuned backbone's
    BatchNorm spans every process's share."""
    world, rank = dist.world_size(), dist.rank()
    chosen = torch.arange(len(data)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    labels = data.labels[chosen]
    backbone = copy.deepcopy(backbone).to(device)
    frozen = recipe.lr_backbone is None
    if world > 1 and not frozen:
        backbone = convert_sync_batchnorm(backbone, device)
    backbone.train(not frozen).requires_grad_(not frozen)
    with torch.random.fork_rng(devices=[]):  # its initial weights from the recipe's seed alone
        torch.manual_seed(recipe.seed)
        classifier = nn.Linear(backbone.feature_dim, num_classes).to(device)
    net = nn.Sequential(backbone, classifier)  # a frozen backbone has no gradient: no graph through it
    model = (
        DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else net
    )
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
        augment_rng=torch.Generator(device=device).manual_seed(recipe.seed * 1_000_003 + rank),  # per-process views
        order_rng=torch.Generator().manual_seed(recipe.seed),  # the same batches on every process
        fine_tuned=not frozen,
    )
    first_epoch, first_batch = progress.restore(state) if progress else (0, 0)
    stop_flag = StopFlag()
    with StopSignals(STOP_SIGNALS if progress else []) as stop:
        for epoch in range(first_epoch, recipe.epochs):
            order_at_start = state.order_rng.get_state()
            # Near-equal batches: never a last batch of one image, which BatchNorm cannot train on.
            parts = torch.randperm(len(chosen), generator=state.order_rng).tensor_split(steps_per_epoch)
            mine = [p.tensor_split(world)[rank] for p in parts[first_batch:]]
            plan = [chosen[p].tolist() for p in mine]
            for batch, idx, images in zip(range(first_batch, steps_per_epoch), mine, data.eval_plan(plan)):
                x = views.view(images.to(device).float().div_(255), 0, state.augment_rng)
                loss = F.cross_entropy(model(x), labels[idx].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if progress and stop_flag.any_rank(stop.requested):  # a collective: every process stops here
                    progress.save(state, epoch, batch + 1, order_at_start)
                    raise progress.interrupted(stop.requested or "a signal to another process", epoch, recipe.epochs)
            first_batch = 0
            if progress:
                progress.save(state, epoch + 1, 0, state.order_rng.get_state())
    del model  # the DDP wrapper holds the process group: released while the group lives (torch 2.11)
    gc.collect()
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
    """Top-1 and top-5 of backbone + classifier on the un-augmented images of `data` (under DDP
    each process scores every world-th image, and the hits are summed)."""
    ks = (1, 5)
    plan = chunks(len(data), batch_size, range(dist.rank(), len(data), dist.world_size()))
    hits = torch.zeros(len(ks), dtype=torch.int64, device=device)
    for idx, images in zip(plan, data.eval_plan(plan)):
        logits = classifier(backbone(views.prepare(images.to(device))))
        hits += torch.tensor(list(topk_hits(logits, data.labels[idx].to(device), ks).values()), device=device)
    hits = dist.all_reduce_sum_no_grad(hits)
    return {f"top{k}": int(h) / len(data) for k, h in zip(ks, hits)}
