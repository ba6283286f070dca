"""Class-stratified subsets (data.subset): the same images for the same seed, in memory or streamed."""

from __future__ import annotations

import numpy as np


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` sorted indices with the class proportions of `labels`, the same for the same seed."""
    from sklearn.model_selection import train_test_split

    stratify = labels if (labels >= 0).all() and len(np.unique(labels)) <= n else None
    idx, _ = train_test_split(np.arange(len(labels)), train_size=n, random_state=seed, stratify=stratify)
    return np.sort(idx)
