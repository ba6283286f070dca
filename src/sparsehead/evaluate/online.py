"""Online monitors during pretraining (off by default; config section `eval`).

- An online linear classifier on r.detach() of the first view (as solo-learn and directclr do):
  its own nn.Linear and optimiser, trained one step per batch on the batch's labels (unlabeled
  images, label < 0, are skipped). It never touches the backbone's gradients. Logged as
  online_linear_acc / online_linear_loss, averaged over the steps since the last log line.
- A k-NN monitor every `eval.knn_every` epochs on the frozen backbone (the end-of-training k-NN).

The loop only hands over the batch labels and asks for the logs: the classifier sees r through a
forward hook on method.backbone that keeps the first output of each training step. Under DDP
every process trains its own classifier on its shard; the main process logs. The classifier is
not checkpointed: after a resume it starts again from scratch.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import EvalConfig


class OnlineMonitor:
    def __init__(self, cfg: EvalConfig, method: nn.Module, num_classes: int, device: torch.device,
                 knn: Optional[Callable[[], dict]] = None):
        self.knn_every = cfg.knn_every
        self.knn = knn  # returns the k-NN accuracies of the current backbone
        self.classifier = None
        self._r = None
        self._sums = {"loss": 0.0, "correct": 0, "count": 0}
        if cfg.online_linear:
            with torch.random.fork_rng(devices=[]):  # leave the run's random stream as it was
                self.classifier = nn.Linear(method.backbone.feature_dim, num_classes).to(device)
            self.optimizer = torch.optim.Adam(self.classifier.parameters(), lr=cfg.online_linear_lr)

            def capture(module, inputs, output):  # a plain function: deep copies of the backbone skip it
                if module.training and self._r is None:
                    self._r = output.detach()

            method.backbone.register_forward_hook(capture)

    def update(self, labels: torch.Tensor) -> None:
        """One step of the online classifier on the r captured during this training step."""
        r, self._r = self._r, None
        if self.classifier is None or r is None:
            return
        labels = labels.to(r.device)
        keep = (labels >= 0) & torch.isfinite(r).all(dim=1)  # a non-finite step must not poison it
        if not keep.any():
            return
        with torch.enable_grad():
            logits = self.classifier(r[keep].float())
            loss = F.cross_entropy(logits, labels[keep])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        n = int(keep.sum())
        self._sums["loss"] += loss.item() * n
        self._sums["correct"] += int((logits.argmax(dim=1) == labels[keep]).sum())
        self._sums["count"] += n

    def logs(self) -> dict[str, float]:
        """Accuracy and loss of the online classifier since the last call (empty when off)."""
        n = self._sums["count"]
        if not n:
            return {}
        out = {"online_linear_acc": self._sums["correct"] / n, "online_linear_loss": self._sums["loss"] / n}
        self._sums = {"loss": 0.0, "correct": 0, "count": 0}
        return out

    def end_of_epoch(self, step: int, steps_per_epoch: int) -> dict[str, float]:
        """The k-NN monitor's numbers when `step` closes an epoch it is due at, else nothing."""
        if not (self.knn_every and self.knn and step % steps_per_epoch == 0
                and (step // steps_per_epoch) % self.knn_every == 0):
            return {}
        return self.knn()
