"""The training loop's batches: `feed.epoch(epoch, first_batch)` yields (images, labels) per step.

memory: uint8 images (n, C, H, W) indexed from the decoded set (on the GPU when training there);
stream: each view's crop already cut by the DataLoader workers, (n, 2, C, S, S). ViewGenerator
takes either.
"""

from __future__ import annotations

import torch

from sparsehead.data.datasets import ImageSet


class MemoryFeed:
    def __init__(self, data: ImageSet, sampler, batch_size: int, device: torch.device):
        self.images = data.images.to(device) if device.type == "cuda" else data.images  # small sets fit on the GPU
        self.labels = data.labels.to(self.images.device)  # indexed with the same device-side order
        self.sampler, self.batch_size = sampler, batch_size

    def epoch(self, epoch: int, first_batch: int):
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler)).to(self.images.device)  # once per epoch: no per-step index copy
        for b in range(first_batch, len(order) // self.batch_size):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


def open_feed(data, sampler, batch_size: int, cfg, device: torch.device):
    if isinstance(data, ImageSet):
        return MemoryFeed(data, sampler, batch_size, device)
    from sparsehead.data.stream import StreamFeed

    return StreamFeed(data, sampler, batch_size, cfg, device)
