"""Frozen-feature extraction shared by every protocol and diagnostic."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

from sparsehead.core.atomic import atomic_write
from sparsehead.data.evalset import EVAL_BATCH, EvalSet
from sparsehead.data.views import ViewGenerator


@torch.no_grad()
def extract(
    method,
    data: EvalSet,
    views: ViewGenerator,
    device: torch.device,
    batch_size: int = EVAL_BATCH,
    indices: Optional[Sequence[int]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, z) for the images `indices` of `data` (default: all), un-augmented (its evaluation
    batches), with the network in eval mode: CPU float tensors, filled batch by batch into
    preallocated (N, d) tensors; (0, 0) tensors for no images."""
    was_training = method.training
    method.eval()
    rows = len(data) if indices is None else len(indices)
    r_all = z_all = torch.empty(0, 0)
    start = 0
    try:
        for images in data.eval_batches(batch_size, indices):
            r, z = method.embed(views.prepare(images.to(device, non_blocking=True)))
            if start == 0:
                r_all = torch.empty(rows, r.shape[1])
                z_all = torch.empty(rows, z.shape[1])
            r_all[start : start + len(r)] = r.float()
            z_all[start : start + len(z)] = z.float()
            start += len(r)
    finally:
        method.train(was_training)
    if start != rows:
        raise RuntimeError(f"extracted {start} feature rows for {rows} images")
    return r_all, z_all


def fingerprint(data: EvalSet) -> str:
    """A short hash of a data set: equal only for the same images in order (EvalSet.fingerprint)."""
    return data.fingerprint()


def cached_extract(
    method,
    data: EvalSet,
    views: ViewGenerator,
    device: torch.device,
    checkpoint_path: Path,
    cache_dir: Path,
    split: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """extract(), stored as cache_dir/<checkpoint>-<data fingerprint>-<split>.pt.

    The file records the checkpoint's size and modification time: a checkpoint rewritten under
    the same name, or another data set, never reuses stale features. Written atomically; a
    damaged file is recomputed; a file that cannot be written (a full disk, a read-only folder) is a
    warning: the evaluation goes on, and the next one extracts again."""
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
    try:
        atomic_write(path, lambda f: torch.save({"r": r, "z": z, "stamp": stamp}, f))
    except OSError as err:  # core.atomic.WriteError: names the file, why and the fix
        warnings.warn(f"features not cached: {err}; going on without the cache (the next evaluation extracts again)")
    return r, z
