"""Unreadable images, found before any training: which records of a split (image files or shard
records, records.py) cannot be decoded, each checked once, and check_splits(), the data checks a
run can make before its first step.

The check decodes every record (a JPEG at its smallest DCT scale); its result is cached in
data.cache_dir with the size and mtime of each record's file, and a record is checked again only
when these change (edited, truncated or replaced in place) or when it was found unreadable (a
repaired file is taken back at once). A file added to the split is checked alone; the others keep
their result (a shard rewritten: each of its records again).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sparsehead.data import records, sources
from sparsehead.data.cache import building, read_cache, write_cache
from sparsehead.data.errors import DataError
from sparsehead.data.records import Records
from sparsehead.data.settings import DataConfig

CHECK_VERSION = 2  # v2: one cache per split folder, each file stamped by size and mtime


def unreadable(source: str | bytes) -> Optional[str]:
    """Why the image (a file's path, or a record's bytes) cannot be decoded, or None: the whole
    image decoded, a JPEG at its smallest DCT scale (1/8: a few times faster, and a truncated file
    still fails)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as pil:
            if pil.format == "JPEG":
                pil.draft("RGB", (1, 1))
            pil.load()
    except Exception as err:
        return str(err) or type(err).__name__
    return None


def _reusable(blob: Optional[dict], idx: Records, now: torch.Tensor) -> np.ndarray:
    """Per file of `idx`: whether the cached result stands (listed with the same stamp, found readable)."""
    if blob is None:
        return np.zeros(len(idx), dtype=bool)
    row = {p: i for i, p in enumerate(blob["paths"].split("\n"))}
    old = np.fromiter((row.get(p, -1) for p in idx.paths), dtype=np.int64, count=len(idx))
    listed = old >= 0
    same = (blob["stamps"].numpy()[old] == now.numpy()).all(axis=1) & ~blob["bad"].numpy()[old]
    return listed & same


def problems(idx: Records, cache_dir: Optional[str]) -> list[Optional[str]]:
    """Why each record of `idx` cannot be decoded (None where it can); from the cache in `cache_dir`
    (None: no cache) for each record whose file has the size and mtime it was checked with. The
    processes of a node take turns (the cache's lock): the first checks, the others read its result."""
    if not cache_dir:
        return _check(idx, None)
    key = hashlib.sha256(f"v{CHECK_VERSION} {idx.where}".encode()).hexdigest()[:24]
    cache = Path(cache_dir).expanduser() / f"badimages-{key}.pt"
    with building(cache):
        return _check(idx, cache)


def _check(idx: Records, cache: Optional[Path]) -> list[Optional[str]]:
    now = idx.stamps()
    blob = None if cache is None else read_cache(cache, "bad-image list", "checking every image again", _well_formed)
    todo = np.flatnonzero(~_reusable(blob, idx, now)).tolist()
    found: list[Optional[str]] = [None] * len(idx)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # in order: a shard's records read together
        for i, why in zip(todo, pool.map(lambda i: unreadable(idx.source(i)), todo, chunksize=256)):
            found[i] = why
    bad = torch.tensor([why is not None for why in found], dtype=torch.bool)
    changed = blob is None or blob["paths"] != "\n".join(idx.paths) or not torch.equal(blob["stamps"], now)
    if cache is not None and (changed or not torch.equal(blob["bad"], bad)):
        write_cache(cache, {"paths": "\n".join(idx.paths), "stamps": now, "bad": bad}, "bad-image list")
    return found


def _well_formed(blob: dict) -> bool:
    n = len(blob["paths"].split("\n"))
    if blob["stamps"].shape != (n, 2) or blob["bad"].shape != (n,) or blob["bad"].dtype != torch.bool:
        raise ValueError("its lists differ in length")
    return True


def report_bad(bad: list, total: int, folder, bad_images: str) -> None:
    """The unreadable images [(name, error)] of a folder or shard set of `total`: an error listing them under
    data.bad_images=fail, or when none is readable; else one warning each and a count."""
    if bad and bad_images == "fail":
        listing = "\n".join(f"  {f}: {r}" for f, r in bad[:10])
        raise DataError(
            f"{len(bad)} unreadable image(s) in {folder}:\n{listing}\n"
            "Remove or repair them, or set data.bad_images=skip to leave them out."
        )
    if bad and len(bad) == total:
        raise DataError(
            f"none of the {total} images in {folder} could be read (first: {bad[0][0]}: {bad[0][1]}); check the files"
        )
    for f, r in bad:
        warnings.warn(f"skipping unreadable image {f}: {r}")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) of {total} in {folder} (data.bad_images=skip)")


def check_splits(cfg: DataConfig) -> None:
    """Everything the data config `cfg` (a DataConfig) lets be checked before a run's first step,
    checked now, so that nothing about the data stops a run after hours of training: each split's
    record index (a missing test/ or val/ folder, a test class train/ lacks, a damaged annotation
    file or shard, a test label value the training shards lack) and the images of each split (the
    cached check above: under data.bad_images=fail any unreadable image is an error; under skip, a
    split with none readable). Raises DataError. The
    torchvision sources check the files of every split whenever one is loaded; digits is embedded."""
    if cfg.source not in sources.RECORD_SOURCES:
        return
    for split in ("train", "test"):
        idx = records.index(cfg, split)
        why = problems(idx, cfg.cache_dir)
        bad = [(idx.name(i), reason) for i, reason in enumerate(why) if reason is not None]
        if cfg.bad_images == "fail" or len(bad) == len(idx):  # skip: the loaders warn of each file they leave out
            report_bad(bad, len(idx), idx.where, cfg.bad_images)
