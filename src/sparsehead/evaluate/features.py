"""Frozen-feature extraction shared by every protocol and diagnostic."""
from __future__ import annotations

import torch

from ..data.datasets import ImageSet
from ..data.views import ViewGenerator


@torch.no_grad()
def extract(method, data: ImageSet, views: ViewGenerator, device: torch.device,
            batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, z) for every image of `data`, un-augmented, with the network in eval mode (CPU tensors)."""
    was_training = method.training
    method.eval()
    rs, zs = [], []
    try:
        for start in range(0, len(data), batch_size):
            x = views.prepare(data.images[start:start + batch_size].to(device, non_blocking=True))
            r, z = method.embed(x)
            rs.append(r.float().cpu())
            zs.append(z.float().cpu())
    finally:
        method.train(was_training)
    return torch.cat(rs), torch.cat(zs)
