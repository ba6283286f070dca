"""`--protocol ncc`: the nearest-class-centre classifier (Huang et al. 2023, formulas:
docs/references.md, evaluation): argmin_k ||f(x) - mu_k||.

mu_k is the mean training feature of class k. Huang et al. take f on the unit sphere, so the
protocol reports both raw and L2-normalised features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsehead.data.evalset import EvalSet
from sparsehead.evaluate.protocol import AssembledOptions, Protocol, frozen_features
from sparsehead.maths.centres import class_centres
from sparsehead.runs.model import TrainedRun


@torch.no_grad()
def ncc_classify(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, normalize: bool = False
) -> torch.Tensor:
    """Predicted labels: the class whose training mean is nearest in Euclidean distance."""
    train_x, test_x = train_x.double(), test_x.double().to(train_x.device)
    if normalize:
        train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    classes, centres = class_centres(train_x, train_y.to(train_x.device))
    return classes[torch.cdist(test_x, centres).argmin(dim=1)]


class NCCProtocol(Protocol):
    """argmin_k ||f(x) - mu_k|| with mu_k the mean training feature of class k (ncc_classify),
    on the raw features and on L2-normalised ones (Huang et al. take f on the unit sphere).

    Source: Huang et al. 2023, "Towards the Generalization of Contrastive Self-Supervised
    Learning" (ICLR 2023, arXiv 2111.00743), the nearest-class-centre classifier. No options.
    """

    name = "ncc"
    summary = "nearest class centre, raw and L2-normalised features"

    def settings(self, opts: AssembledOptions) -> dict:
        return {}

    def run(
        self, trained: TrainedRun, train: EvalSet, test: EvalSet, opts: AssembledOptions, device: torch.device
    ) -> dict:
        def accuracy(xtr, xte, normalize: bool) -> float:
            predicted = ncc_classify(xtr.to(device), train.labels, xte, normalize).cpu()
            return (predicted == test.labels).float().mean().item()

        return {
            name: {"top1": accuracy(xtr, xte, False), "normalized_top1": accuracy(xtr, xte, True)}
            for name, (xtr, xte) in frozen_features(trained, train, test, device, opts.with_z).items()
        }
