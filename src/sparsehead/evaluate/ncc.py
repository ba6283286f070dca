"""Nearest-class-centre classifier (papers/002, SPEC section 5): argmin_k ||f(x) - mu_k||.

mu_k is the mean training feature of class k. Huang et al. take f on the unit sphere, so the
protocol reports both raw and L2-normalised features."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def class_centres(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, d) class means; a class without training samples gets NaN (never chosen)."""
    sums = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, y, x)
    counts = torch.bincount(y, minlength=num_classes).to(x.dtype)
    return sums / counts[:, None]


@torch.no_grad()
def ncc_classify(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 normalize: bool = False) -> torch.Tensor:
    """Predicted labels: the class whose training mean is nearest in Euclidean distance."""
    train_x, test_x = train_x.double(), test_x.double().to(train_x.device)
    if normalize:
        train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    train_y = train_y.to(train_x.device).long()
    centres = class_centres(train_x, train_y, int(train_y.max()) + 1)
    dist = torch.cdist(test_x, centres).nan_to_num_(nan=float("inf"))
    return dist.argmin(dim=1)
