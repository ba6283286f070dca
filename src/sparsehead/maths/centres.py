"""Class centres: the mean feature of each class, the one computation of them in the package (the
nearest-class-centre protocol and the analysis's centre metrics read it)."""

from __future__ import annotations

import torch


def class_centres(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes, mu): the class ids present (ascending) and mu_k, the mean of the rows of class k
    (samples labelled < 0, unlabelled, are left out)."""
    labels = torch.as_tensor(labels, device=x.device).long()
    keep = labels >= 0
    classes, index = torch.unique(labels[keep], return_inverse=True)
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, index, x[keep])
    counts = torch.bincount(index, minlength=len(classes)).to(x.dtype)
    return classes, sums / counts[:, None]
