"""Frozen-feature extraction shared by every protocol and diagnostic."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from sparsehead.core.atomic import atomic_write
from sparsehead.data.datasets import ImageSet
from sparsehead.data.views import ViewGenerator


@torch.no_grad()
def extract(
    method, data: ImageSet, views: ViewGenerator, device: torch.device, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, z) for every image of `data`, un-augmented, with the network in eval mode (CPU tensors)."""
    was_training = method.training
    method.eval()
    rs, zs = [], []
    try:
        for images in _batches(data, batch_size, device):
            x = views.prepare(images.to(device, non_blocking=True))
            r, z = method.embed(x)
            rs.append(r.float().cpu())
            zs.append(z.float().cpu())
    finally:
        method.train(was_training)
    return torch.cat(rs), torch.cat(zs)


def _batches(data, batch_size: int, device: torch.device):
    """uint8 batches in order: slices of an ImageSet, or a streamed set's centre crops (resized and
    cut at data.image_size by DataLoader workers)."""
    if isinstance(data, ImageSet):
        return (data.images[start : start + batch_size] for start in range(0, len(data), batch_size))
    from sparsehead.data.stream import eval_batches

    return eval_batches(data, batch_size, workers=min(4, os.cpu_count() or 1), device=device)


def fingerprint(data: ImageSet) -> str:
    """A short hash of a data set's pixels and labels: equal only for the same images in order."""
    h = hashlib.sha256(str(tuple(data.images.shape)).encode())
    h.update(data.images.contiguous().numpy())
    h.update(data.labels.contiguous().numpy())
    return h.hexdigest()[:16]


def cached_extract(
    method,
    data: ImageSet,
    views: ViewGenerator,
    device: torch.device,
    checkpoint_path: Path,
    cache_dir: Path,
    split: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """extract(), stored as cache_dir/<checkpoint>-<data fingerprint>-<split>.pt.

    The file records the checkpoint's size and modification time: a checkpoint rewritten under
    the same name, or another data set, never reuses stale features. Written atomically; a
    damaged file is recomputed."""
    checkpoint_path = Path(checkpoint_path)
    st = checkpoint_path.stat()
    stamp = {"checkpoint": checkpoint_path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "images": len(data)}
    path = Path(cache_dir) / f"{checkpoint_path.stem}-{fingerprint(data)}-{split}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob["stamp"] == stamp:
                return blob["r"], blob["z"]
        except Exception as err:  # a damaged cache costs time, never a wrong result
            warnings.warn(f"ignoring damaged feature cache {path} ({err}); extracting again")
    r, z = extract(method, data, views, device)
    atomic_write(path, lambda f: torch.save({"r": r, "z": z, "stamp": stamp}, f))
    return r, z
