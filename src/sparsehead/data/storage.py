"""data.storage: whether a split is decoded into memory or streamed from its files.

auto picks memory when the decoded uint8 set (N x 3 x image_size^2 bytes) fits data.memory_budget_gb,
else stream, and prints the choice; memory over the budget is refused before any decoding. The budget
is a node's: the processes torchrun starts on it share one copy through data.cache_dir, or each
holds its own without it.
"""

from __future__ import annotations

import sys

from sparsehead.core import distributed as dist
from sparsehead.data import cache, records, sources, subsets
from sparsehead.data.errors import DataError
from sparsehead.data.settings import DataConfig


def decoded_bytes(num_images: int, image_size: int) -> int:
    return num_images * 3 * image_size * image_size


def choose(cfg: DataConfig, split: str) -> str:
    """ "memory" or "stream" for `split` of the data config `cfg`."""
    if cfg.source not in sources.RECORD_SOURCES:
        if cfg.storage == "stream":
            raise DataError(
                f"data.storage=stream reads folder sources and shards ({', '.join(sources.RECORD_SOURCES)}); "
                f"data.source={cfg.source} is decoded in memory: set data.storage=memory or auto"
            )
        return "memory"
    if cfg.storage == "stream":
        return "stream"
    n = subsets.subset_size(cfg, split, len(records.index(cfg, split)))
    # The node's processes share one decoded copy through the cache (data/cache.py); without it each holds its own.
    copies = 1 if cache.can_write(cfg.cache_dir, decoded_bytes(n, cfg.image_size)) else dist.local_world_size()
    need = copies * decoded_bytes(n, cfg.image_size) / 1e9
    fits = need <= cfg.memory_budget_gb
    if cfg.storage == "memory" and not fits:
        held = f"{copies} processes of this node each hold" if copies > 1 else "takes"
        raise DataError(
            f"data.storage=memory: the decoded {split} set ({n} images at {cfg.image_size} px) {held} "
            f"{need:.2f} GB in all, more than data.memory_budget_gb={cfg.memory_budget_gb} (a node's budget); set "
            "data.storage=stream (or auto), set data.cache_dir so the processes share one copy, or raise "
            "data.memory_budget_gb"
        )
    choice = "memory" if fits else "stream"
    if cfg.storage == "auto" and dist.is_main():
        print(
            f"data.storage=auto: {choice} for the {split} set ({n} images, {need:.2f} GB decoded at "
            f"{cfg.image_size} px, budget {cfg.memory_budget_gb} GB)",
            file=sys.stderr,
        )
    return choice
