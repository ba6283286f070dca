"""The records of a split: what every storage reads of a data set held in image files or in shards.

A split's index (readers.FileIndex for the folder sources, shards' TarRecords and ParquetRecords)
lists its records, in a fixed order, with their labels and the data set's one class list, and
reads each record: `source(i)` is what the decoders open (a file's path, or a shard record's bytes,
read with one pread or from its row group). The memory loader (datasets.py), the stream (stream.py),
the bad-image check (image_check.py) and the storage choice read every source through it alike.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from sparsehead.data import readers, sources
from sparsehead.data.settings import DataConfig


class Records(Protocol):
    where: str  # the split's folder, or its shard pattern: messages and cache keys name it
    paths: list[str]  # each record's name (a file relative to the split's folder; "<shard>/<name in it>")
    labels: np.ndarray  # int64, one per record: its index in `classes`
    classes: list[str]

    def __len__(self) -> int: ...

    def source(self, i: int) -> str | bytes:
        """What the decoders open for record i: a file's path, or the record's bytes."""
        ...

    def name(self, i: int) -> str:
        """Record i's name in messages (a path, or a shard's path and the name inside it)."""
        ...

    def stamps(self) -> torch.Tensor:
        """(size, mtime in ns) int64 (n, 2) of each record's file: a changed file changes it."""
        ...

    def select(self, keep) -> "Records":
        """The records at the indices `keep`, in that order."""
        ...


def index(cfg: DataConfig, split: str) -> Records:
    """The records of `split` ("test": the evaluation split; otherwise train) of a source read from
    image records (sources.RECORD_SOURCES)."""
    reader = sources.SOURCES[cfg.source].reader
    if reader == "webdataset":
        from sparsehead.data.shards import tar_index

        return tar_index.index(cfg, split)
    if reader == "parquet":
        from sparsehead.data.shards import parquet_index

        return parquet_index.index(cfg, split)
    return readers.index(cfg, split)
