"""Monitors of a pretraining run (config section `eval`): the k-NN report of the frozen backbone
(at the end of training and, with eval.knn_every, every N epochs) and an online linear classifier.

- The online linear classifier (off by default; as solo-learn and directclr do) trains on
  r.detach() of the first view, which the method's forward returns (MethodOutput.r): its own
  nn.Linear and optimiser, one step per batch on the batch's labels (unlabeled images, label < 0,
  are skipped). It never touches the backbone's gradients. Logged as online_linear_acc /
  online_linear_loss, averaged over the steps since the last log line. Under DDP every process
  trains its own classifier on its shard; the main process logs. It is not checkpointed: after a
  resume it starts again from scratch.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from sparsehead.config import KNN_TEMPERATURE, KNN_WEIGHTED_K, Config, EvalConfig
from sparsehead.core.step_hook import StepHook
from sparsehead.data import datasets
from sparsehead.data.views import ViewGenerator
from sparsehead.evaluate.knn_shards import sharded_knn_report
from sparsehead.training.faults import gated_update


def knn_summary(method: torch.nn.Module, cfg: Config, views: ViewGenerator, device: torch.device) -> dict:
    """The run's k-NN numbers as results.json records them: knn<k>_top1 (eval.knn_k majority vote)
    and knn200_weighted_top1 (200 neighbours, or all of a smaller training set, weighted
    exp(sim / KNN_TEMPERATURE)). A collective under DDP: every rank calls it and does its share."""
    train = datasets.load(cfg.data, "train")
    test = datasets.load(cfg.data, "test")
    report = sharded_knn_report(
        method,
        train,
        test,
        views,
        device,
        k=cfg.eval.knn_k,
        k_weighted=min(KNN_WEIGHTED_K, len(train)),
        temperature=KNN_TEMPERATURE,
        batch_size=cfg.eval.knn_batch_size,
    )
    return {f"knn{cfg.eval.knn_k}_top1": report["top1"], f"knn{KNN_WEIGHTED_K}_weighted_top1": report["weighted_top1"]}


class OnlineMonitor(StepHook):
    def __init__(
        self,
        cfg: EvalConfig,
        feature_dim: int,
        num_classes: int,
        device: torch.device,
        knn: Optional[Callable[[], dict]] = None,
    ):
        self.knn_every = cfg.knn_every
        self.knn = knn  # returns the k-NN accuracies of the current backbone
        self.classifier = None
        self._sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss x rows, correct, rows
        if cfg.online_linear:
            with torch.random.fork_rng(devices=[]):  # leave the run's random stream as it was
                self.classifier = nn.Linear(feature_dim, num_classes).to(device)
            self.optimizer = torch.optim.Adam(self.classifier.parameters(), lr=cfg.online_linear_lr, fused=True)

    def observe(self, labels: torch.Tensor, r: Optional[torch.Tensor], z: tuple = ()) -> None:
        """One step of the online classifier on this training step's r (of the first view), on the
        labelled rows with a finite r, all on the device (no read: rows are masked, not selected)."""
        if self.classifier is None or r is None:
            return
        r = r.detach().float()
        labels = labels.to(r.device, non_blocking=True)
        keep = (labels >= 0) & torch.isfinite(r).all(dim=1)  # a non-finite step must not poison it
        rows = keep.sum()
        with torch.enable_grad():
            logits = self.classifier(torch.where(keep[:, None], r, 0.0))
            losses = F.cross_entropy(logits, labels.clamp_min(0), reduction="none") * keep
            self.optimizer.zero_grad(set_to_none=True)
            (losses.sum() / rows.clamp_min(1)).backward()
        gated_update(self.optimizer, rows > 0)  # no update from a batch without a usable row
        correct = ((logits.argmax(dim=1) == labels) & keep).sum()
        self._sums += torch.stack([losses.detach().sum(), correct, rows]).double()

    def logs(self) -> dict[str, float]:
        """Accuracy and loss of the online classifier since the last call (empty when off)."""
        loss, correct, n = self._sums.tolist()
        if not n:
            return {}
        self._sums.zero_()
        return {"online_linear_acc": correct / n, "online_linear_loss": loss / n}

    def end_of_epoch(self, step: int, steps_per_epoch: int) -> dict[str, float]:
        """The k-NN monitor's numbers when `step` closes an epoch it is due at, else nothing."""
        if not (
            self.knn_every
            and self.knn
            and step % steps_per_epoch == 0
            and (step // steps_per_epoch) % self.knn_every == 0
        ):
            return {}
        return self.knn()
