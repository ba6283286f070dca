"""k-nearest-neighbour classification on cosine similarity (formulas: docs/references.md, evaluation).

Two conventions: temperature=None is the SparseHead paper's plain majority vote (k = 5, ties
go to the class of the nearest tied neighbour); a temperature gives the InstDisc / MoCo monitor
(k = 200, each neighbour votes exp(sim / temperature)). Test samples are processed in blocks,
so memory is bounded by block x train, never test x train.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from sparsehead.config import KNN_K, KNN_TEMPERATURE, KNN_WEIGHTED_K
from sparsehead.evaluate.errors import EvaluationError


@torch.no_grad()
def knn_classify(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    k: int,
    temperature: Optional[float] = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Predicted labels of `test_x` by its k nearest training samples in cosine similarity."""
    if k > train_x.shape[0]:
        raise EvaluationError(f"k={k} is larger than the training set ({train_x.shape[0]} samples); choose a smaller k")
    train_x = F.normalize(train_x.float(), dim=1)
    train_y = train_y.to(train_x.device).long()
    num_classes = int(train_y.max()) + 1
    preds = []
    for start in range(0, test_x.shape[0], batch_size):
        q = F.normalize(test_x[start : start + batch_size].float().to(train_x.device), dim=1)
        sim, idx = (q @ train_x.T).topk(k, dim=1)  # sorted, nearest first
        labels = train_y[idx]
        if temperature is None:
            votes = torch.zeros(q.shape[0], num_classes, device=q.device)
            votes.scatter_add_(1, labels, torch.ones_like(sim))
            # Tie-break: a bonus below 1 that is larger for classes whose nearest neighbour is closer.
            rank_bonus = (k - torch.arange(k, device=q.device, dtype=torch.float)) / (k + 1)
            bonus = torch.zeros_like(votes).scatter_reduce_(
                1, labels, rank_bonus.expand_as(sim).contiguous(), reduce="amax"
            )
            votes += bonus
        else:
            votes = torch.zeros(q.shape[0], num_classes, device=q.device)
            votes.scatter_add_(1, labels, torch.exp(sim / temperature))
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_accuracy(
    train_x, train_y, test_x, test_y, k: int, temperature: Optional[float] = None, batch_size: int = 1024
) -> float:
    pred = knn_classify(train_x, train_y, test_x, k, temperature, batch_size)
    return (pred.cpu() == test_y.cpu()).float().mean().item()


def knn_report(
    train_x,
    train_y,
    test_x,
    test_y,
    k: int = KNN_K,
    k_weighted: int = KNN_WEIGHTED_K,
    temperature: float = KNN_TEMPERATURE,
    batch_size: int = 1024,
) -> dict[str, float]:
    """The one k-NN report: top-1 of the k-NN majority vote and of the k_weighted-NN vote weighted
    exp(sim / temperature)."""
    return {
        "top1": knn_accuracy(train_x, train_y, test_x, test_y, k, batch_size=batch_size),
        "weighted_top1": knn_accuracy(
            train_x, train_y, test_x, test_y, k_weighted, temperature=temperature, batch_size=batch_size
        ),
    }
