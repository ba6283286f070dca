"""Evaluation protocols on trained backbones: k-NN, linear probe, semi-supervised, nearest centre."""
from .errors import EvaluationError
from .knn import knn_accuracy, knn_classify
from .linear import linear_probe
from .ncc import ncc_classify

__all__ = ["EvaluationError", "knn_classify", "knn_accuracy", "linear_probe", "ncc_classify"]
