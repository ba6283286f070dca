"""Nearest-class-centre classifier (Huang et al. 2023, formulas: docs/references.md, evaluation):
argmin_k ||f(x) - mu_k||.

mu_k is the mean training feature of class k. Huang et al. take f on the unit sphere, so the
protocol reports both raw and L2-normalised features."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_centres(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes, mu): the class ids present (ascending) and mu_k, the mean of the rows of class k
    (samples labelled < 0, unlabelled, are left out). The one class-centre computation of the
    package: the NCC protocol and the analysis's centre metrics use it."""
    labels = torch.as_tensor(labels, device=x.device).long()
    keep = labels >= 0
    classes, index = torch.unique(labels[keep], return_inverse=True)
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, index, x[keep])
    counts = torch.bincount(index, minlength=len(classes)).to(x.dtype)
    return classes, sums / counts[:, None]


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
