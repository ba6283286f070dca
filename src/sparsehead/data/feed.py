"""The training loop's batches: `feed.epoch(epoch, first_batch)` yields (pixels, labels) per step,
pixels a crops.ViewSource whatever the storage (ViewGenerator takes it as it comes).

memory: crops.WholeImages, uint8 (n, C, H, W) indexed from the decoded set (on the GPU when training
there), each view drawn and cut on the device by the views; stream: crops.CutViews, each view cut by
the DataLoader workers (stream.StreamFeed), or under data.decode=device image_batch.ImageBatch, the
full-size images decoded on the training device, each view cut there (device_decode.DeviceDecodeFeed).
"""

from __future__ import annotations

from typing import Sequence

import torch

from sparsehead.data.crops import CropSpec, WholeImages
from sparsehead.data.datasets import ImageSet
from sparsehead.data.device_decode import DeviceDecodeFeed
from sparsehead.data.stream import StreamFeed, StreamSet


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
            yield WholeImages(self.images[idx]), self.labels[idx]


def open_feed(
    data: ImageSet | StreamSet,
    sampler,
    batch_size: int,
    plan: Sequence[CropSpec],
    seed: int,
    workers: int,
    device: torch.device,
):
    """The feed of `data`; a stream's workers cut the views of `plan` (ViewGenerator.plan), their boxes
    drawn from `seed` (train.seed), in `workers` processes (data.workers), or only read its bytes
    (data.decode=device)."""
    if isinstance(data, ImageSet):
        return MemoryFeed(data, sampler, batch_size, device)
    if data.decode == "device":
        return DeviceDecodeFeed(data, sampler, batch_size, workers, device)
    return StreamFeed(data, sampler, batch_size, plan, seed, workers, device)
