"""Evaluation protocols on frozen features."""
from .knn import knn_accuracy, knn_classify

__all__ = ["knn_classify", "knn_accuracy"]
