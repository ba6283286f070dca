"""`--protocol knn`: k-nearest-neighbour classification of frozen features on cosine similarity
(formulas: docs/references.md, evaluation); its knn_report is also the pretraining k-NN monitor's
(spread over DDP ranks by knn_shards.py).

A `Vote` is one convention: temperature=None is the SparseHead paper's plain majority vote (k = 5,
ties go to the class of the nearest tied neighbour); a temperature T gives the weighted vote of
InstDisc (k = 200, T = 0.07; each neighbour votes exp(sim / T)). Every vote asked for is read
from one top-k pass (k = the largest k): each similarity is computed once.

The training features (the bank) live on the device, L2-normalised, in float32, or in float16
where float32 does not fit. Test samples go in blocks of `batch_size` and the bank in chunks of
BANK_CHUNK rows (a running top-k over the chunks), so memory is bounded by block x chunk, never
test x train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F

from sparsehead.config import KNN_K, KNN_TEMPERATURE, KNN_WEIGHTED_K
from sparsehead.core.options import opt
from sparsehead.data.evalset import EvalSet
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.evaluate.protocol import AssembledOptions, Protocol, frozen_features
from sparsehead.runs.model import TrainedRun

BANK_CHUNK = 65536  # bank rows per similarity block: 1024 x 65536 float32 = 256 MiB
BANK_SHARE = 0.5  # the share of the device's free memory a float32 bank may take before float16


@dataclass(frozen=True)
class Vote:
    """k neighbours, each voting 1 (temperature None: majority vote) or exp(sim / temperature)."""

    k: int
    temperature: Optional[float] = None


def bank_dtype(rows: int, dim: int, device: torch.device) -> torch.dtype:
    """float32, or float16 where a float32 bank would take more than BANK_SHARE of the free memory
    of a CUDA device (a CPU bank stays float32: CPU float16 matmuls are slow)."""
    if device.type != "cuda":
        return torch.float32
    free, _ = torch.cuda.mem_get_info(device)
    return torch.float32 if rows * dim * 4 <= BANK_SHARE * free else torch.float16


@torch.no_grad()
def feature_bank(train_x: torch.Tensor, device: torch.device, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The training features L2-normalised on `device` (block by block: no float32 copy of the
    whole set is made there when it is stored in float16)."""
    dtype = dtype or bank_dtype(*train_x.shape, device)
    bank = torch.empty(train_x.shape, dtype=dtype, device=device)
    for start in range(0, train_x.shape[0], BANK_CHUNK):
        block = train_x[start : start + BANK_CHUNK].to(device).float()
        bank[start : start + BANK_CHUNK] = F.normalize(block, dim=1).to(dtype)
    return bank


def _similarities(queries: torch.Tensor, bank_rows: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of normalised queries to a chunk of the bank (the one matmul)."""
    return queries.to(bank_rows.dtype) @ bank_rows.T


def nearest(queries: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 similarities and bank indices of the k nearest bank rows of each query, nearest first."""
    best_sim = best_idx = None
    for start in range(0, bank.shape[0], BANK_CHUNK):
        sim = _similarities(queries, bank[start : start + BANK_CHUNK]).float()
        sim, idx = sim.topk(min(k, sim.shape[1]), dim=1)
        if best_sim is not None:  # merge with the best of the chunks before
            sim, idx = torch.cat([best_sim, sim], dim=1), torch.cat([best_idx, idx + start], dim=1)
            sim, pick = sim.topk(min(k, sim.shape[1]), dim=1)
            idx = idx.gather(1, pick)
        best_sim, best_idx = sim, idx
    return best_sim, best_idx


def vote(sim: torch.Tensor, labels: torch.Tensor, rule: Vote, num_classes: int) -> torch.Tensor:
    """Predicted classes from the neighbours' similarities and labels (nearest first, >= rule.k of them)."""
    sim, labels = sim[:, : rule.k], labels[:, : rule.k]
    votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
    if rule.temperature is not None:
        return votes.scatter_add_(1, labels, torch.exp(sim / rule.temperature)).argmax(dim=1)
    votes.scatter_add_(1, labels, torch.ones_like(sim))
    # Tie-break: a bonus below 1 that is larger for classes whose nearest neighbour is closer.
    rank_bonus = (rule.k - torch.arange(rule.k, device=sim.device, dtype=torch.float)) / (rule.k + 1)
    bonus = torch.zeros_like(votes).scatter_reduce_(1, labels, rank_bonus.expand_as(sim).contiguous(), reduce="amax")
    return (votes + bonus).argmax(dim=1)


@torch.no_grad()
def knn_predict(
    bank: torch.Tensor, bank_y: torch.Tensor, test_x: torch.Tensor, votes: Sequence[Vote], batch_size: int = 1024
) -> torch.Tensor:
    """(len(votes), len(test_x)) predicted labels of `test_x` by each vote, from one top-k pass
    over `bank` (feature_bank) with labels `bank_y`."""
    k = max(rule.k for rule in votes)
    if k > bank.shape[0]:
        raise EvaluationError(f"k={k} is larger than the training set ({bank.shape[0]} samples); choose a smaller k")
    bank_y = bank_y.to(bank.device).long()
    num_classes = int(bank_y.max()) + 1
    preds = torch.empty(len(votes), test_x.shape[0], dtype=torch.long)
    for start in range(0, test_x.shape[0], batch_size):
        queries = F.normalize(test_x[start : start + batch_size].to(bank.device).float(), dim=1)
        sim, idx = nearest(queries, bank, k)
        labels = bank_y[idx]
        for i, rule in enumerate(votes):
            preds[i, start : start + len(queries)] = vote(sim, labels, rule, num_classes).cpu()
    return preds


def knn_classify(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    k: int,
    temperature: Optional[float] = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Predicted labels of `test_x` by its k nearest training samples in cosine similarity."""
    bank = feature_bank(train_x, train_x.device)
    return knn_predict(bank, train_y, test_x, [Vote(k, temperature)], batch_size)[0]


def knn_accuracy(
    train_x, train_y, test_x, test_y, k: int, temperature: Optional[float] = None, batch_size: int = 1024
) -> float:
    pred = knn_classify(train_x, train_y, test_x, k, temperature, batch_size)
    return (pred == test_y.cpu()).sum().item() / len(test_y)


REPORT_KEYS = ("top1", "weighted_top1")  # the report's numbers, in the order of report_votes()


def report_votes(k: int = KNN_K, k_weighted: int = KNN_WEIGHTED_K, temperature: float = KNN_TEMPERATURE) -> list[Vote]:
    """The report's two votes: the k-NN majority vote and the k_weighted-NN vote weighted exp(sim / T)."""
    return [Vote(k), Vote(k_weighted, temperature)]


def knn_report(
    train_x,
    train_y,
    test_x,
    test_y,
    k: int = KNN_K,
    k_weighted: int = KNN_WEIGHTED_K,
    temperature: float = KNN_TEMPERATURE,
    batch_size: int = 1024,
    device: Optional[torch.device] = None,
) -> dict[str, float]:
    """The one k-NN report (REPORT_KEYS), from one top-k pass on `device` (default: train_x's)."""
    bank = feature_bank(train_x, device or train_x.device)
    preds = knn_predict(bank, train_y, test_x, report_votes(k, k_weighted, temperature), batch_size)
    correct = (preds == test_y.cpu()).sum(dim=1)
    return dict(zip(REPORT_KEYS, (correct.double() / len(test_y)).tolist()))


@dataclass
class KNNOptions:
    help_group: ClassVar[str] = "knn"
    k: int = opt(KNN_K, "neighbours of the majority vote (the SparseHead paper: 5)", min=1)
    k_weighted: int = opt(KNN_WEIGHTED_K, "neighbours of the weighted vote (InstDisc: 200)", min=1)
    temperature: float = opt(
        KNN_TEMPERATURE,
        "weighted vote: exp(sim / T) (InstDisc: 0.07; MoCo's CIFAR-10 monitor: 0.1)",
        min=0.0,
        exclusive_min=True,
    )


class KNNProtocol(Protocol):
    """Two k-NN votes on L2-normalised frozen features, from one top-k pass (knn_report).

    Source: the 5-NN majority vote of Song et al. 2023 (arXiv 2307.08913) Table 1, ties to the
    nearest tied neighbour's class; and the neighbour vote weighted exp(sim / T) of Wu et al. 2018
    (InstDisc, arXiv 1805.01978) with k = 200 and T = 0.07, the k-NN of the ImageNet papers.
    `--temperature 0.1` gives the k-NN monitor of the MoCo CIFAR-10 demo (facebookresearch/moco).
    """

    name = "knn"
    summary = "cosine k-NN: k=5 majority vote (the SparseHead paper) and k=200 weighted exp(sim/0.07) (InstDisc)"
    Options = KNNOptions

    def check_training_set(self, opts: AssembledOptions, train: EvalSet) -> None:
        for flag, k in (("--k", opts.k), ("--k-weighted", opts.k_weighted)):
            if k > len(train):
                raise EvaluationError(
                    f"{flag} {k} is larger than the training set ({len(train)} images); choose {flag} <= {len(train)}"
                )

    def settings(self, opts: AssembledOptions) -> dict:
        return {"k": opts.k, "k_weighted": opts.k_weighted, "temperature": opts.temperature}

    def run(
        self, trained: TrainedRun, train: EvalSet, test: EvalSet, opts: AssembledOptions, device: torch.device
    ) -> dict:
        out = {}
        for name, (xtr, xte) in frozen_features(trained, train, test, device, opts.with_z).items():
            out[name] = knn_report(
                xtr, train.labels, xte, test.labels, opts.k, opts.k_weighted, opts.temperature, device=device
            )
        return out
