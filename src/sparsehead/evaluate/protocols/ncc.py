"""`--protocol ncc`: the nearest-class-centre classifier on frozen features."""

from __future__ import annotations

from sparsehead.evaluate.ncc import ncc_classify
from sparsehead.evaluate.protocols.base import Protocol, frozen_features


class NCCProtocol(Protocol):
    """argmin_k ||f(x) - mu_k|| with mu_k the mean training feature of class k (evaluate/ncc.py),
    on the raw features and on L2-normalised ones (Huang et al. take f on the unit sphere).

    Source: Huang et al. 2023, "Towards the Generalization of Contrastive Self-Supervised
    Learning" (ICLR 2023, arXiv 2111.00743), the nearest-class-centre classifier. No options.
    """

    name = "ncc"
    summary = "nearest class centre, raw and L2-normalised features"

    def settings(self, opts) -> dict:
        return {}

    def run(self, trained, train, test, opts, device) -> dict:
        def accuracy(xtr, xte, normalize: bool) -> float:
            predicted = ncc_classify(xtr.to(device), train.labels, xte, normalize).cpu()
            return (predicted == test.labels).float().mean().item()

        return {
            name: {"top1": accuracy(xtr, xte, False), "normalized_top1": accuracy(xtr, xte, True)}
            for name, (xtr, xte) in frozen_features(trained, train, test, device, opts.with_z).items()
        }
