"""data.subset: a class-stratified subset of the training splits (never of the test split), the same
images for the same seed, in memory or streamed."""

from __future__ import annotations

from typing import Optional

import numpy as np

from sparsehead.data.settings import DataConfig

SUBSET_SEED = 0  # the subset is fixed by the data, not by the run's seed


def subset_size(cfg: DataConfig, split: str, num_images: int) -> int:
    """How many of the `num_images` of `split` data.subset keeps."""
    return min(num_images, cfg.subset) if split != "test" and cfg.subset is not None else num_images


def subset_indices(cfg: DataConfig, split: str, labels: np.ndarray) -> Optional[np.ndarray]:
    """The sorted indices data.subset keeps of the images of `split` with `labels` (None: all of them)."""
    n = subset_size(cfg, split, len(labels))
    return None if n == len(labels) else stratified_indices(labels, n, SUBSET_SEED)


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` sorted indices with the class proportions of `labels`, the same for the same seed."""
    from sklearn.model_selection import train_test_split

    stratify = labels if (labels >= 0).all() and len(np.unique(labels)) <= n else None
    idx, _ = train_test_split(np.arange(len(labels)), train_size=n, random_state=seed, stratify=stratify)
    return np.sort(idx)
