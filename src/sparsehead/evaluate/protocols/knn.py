"""`--protocol knn`: cosine k-nearest-neighbour classification of frozen features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sparsehead.config import KNN_K, KNN_TEMPERATURE, KNN_WEIGHTED_K
from sparsehead.core.options import opt
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.evaluate.knn import knn_report
from sparsehead.evaluate.protocols.base import Protocol, frozen_features


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
    """Two k-NN votes on L2-normalised frozen features, from one top-k pass (evaluate/knn.py).

    Source: the 5-NN majority vote of Song et al. 2023 (arXiv 2307.08913) Table 1, ties to the
    nearest tied neighbour's class; and the neighbour vote weighted exp(sim / T) of Wu et al. 2018
    (InstDisc, arXiv 1805.01978) with k = 200 and T = 0.07, the k-NN of the ImageNet papers.
    `--temperature 0.1` gives the k-NN monitor of the MoCo CIFAR-10 demo (facebookresearch/moco).
    """

    name = "knn"
    summary = "cosine k-NN: k=5 majority vote (the SparseHead paper) and k=200 weighted exp(sim/0.07) (InstDisc)"
    Options = KNNOptions

    def check_training_set(self, opts, train) -> None:
        for flag, k in (("--k", opts.k), ("--k-weighted", opts.k_weighted)):
            if k > len(train):
                raise EvaluationError(
                    f"{flag} {k} is larger than the training set ({len(train)} images); choose {flag} <= {len(train)}"
                )

    def settings(self, opts) -> dict:
        return {"k": opts.k, "k_weighted": opts.k_weighted, "temperature": opts.temperature}

    def run(self, trained, train, test, opts, device) -> dict:
        out = {}
        for name, (xtr, xte) in frozen_features(trained, train, test, device, opts.with_z).items():
            out[name] = knn_report(
                xtr, train.labels, xte, test.labels, opts.k, opts.k_weighted, opts.temperature, device=device
            )
        return out
