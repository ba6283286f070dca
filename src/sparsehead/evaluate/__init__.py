"""Evaluation protocols on trained backbones: k-NN, linear probe, semi-supervised, nearest centre."""

from sparsehead.evaluate.errors import EvaluationError
from sparsehead.evaluate.knn import knn_accuracy, knn_classify
from sparsehead.evaluate.linear import linear_probe
from sparsehead.evaluate.ncc import ncc_classify

__all__ = ["EvaluationError", "knn_classify", "knn_accuracy", "linear_probe", "ncc_classify"]
