"""data.bad_images=skip on a streamed set: which image files cannot be decoded, each checked once.

The check decodes every file (a JPEG at its smallest DCT scale); its result is cached in
data.cache_dir and reused while no folder holding the files has changed (the file index's own rule:
adding, removing or renaming a file changes its folder's mtime). The files found unreadable are
checked again on every use, so a repaired one is taken back at once.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch

from sparsehead.data.cache import read_cache, write_cache
from sparsehead.data.errors import DataError
from sparsehead.data.readers import FileIndex, folder_stamps

CHECK_VERSION = 1


def unreadable(path: str) -> Optional[str]:
    """Why the image file cannot be decoded, or None: the whole file decoded, a JPEG at its
    smallest DCT scale (1/8: a few times faster, and a truncated file still fails)."""
    from PIL import Image

    try:
        with Image.open(path) as pil:
            if pil.format == "JPEG":
                pil.draft("RGB", (1, 1))
            pil.load()
    except Exception as err:
        return str(err) or type(err).__name__
    return None


def problems(idx: FileIndex, cache_dir: Optional[str]) -> list[Optional[str]]:
    """Why each file of `idx` cannot be decoded (None where it can), from the cache in `cache_dir`
    (None: no cache) while the files' folders are unchanged."""
    paths = idx.full_paths()
    folders = sorted({os.path.dirname(p) for p in paths})
    cache = None
    if cache_dir:
        listing = "\n".join([f"v{CHECK_VERSION} {idx.root}", *idx.paths])
        key = hashlib.sha256(listing.encode()).hexdigest()[:24]
        cache = Path(cache_dir).expanduser() / f"badimages-{key}.pt"
        blob = read_cache(cache, "bad-image list", "checking every image again", lambda b: _unchanged(b, folders))
        if blob is not None:
            found: list[Optional[str]] = [None] * len(paths)
            for i in blob["bad"].tolist():
                found[i] = unreadable(paths[i])
            return found
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        found = list(pool.map(unreadable, paths, chunksize=256))
    if cache is not None:
        bad = torch.tensor([i for i, e in enumerate(found) if e is not None], dtype=torch.long)
        blob = {"folders": "\n".join(folders), "stamp": torch.tensor(folder_stamps(folders)), "bad": bad}
        write_cache(cache, blob, "bad-image list")
    return found


def _unchanged(blob: dict, folders: list[str]) -> bool:
    try:
        return blob["folders"] == "\n".join(folders) and torch.equal(
            torch.tensor(folder_stamps(folders)), blob["stamp"]
        )
    except OSError:
        return False  # a folder is gone: check again


def report_bad(bad: list, total: int, folder, bad_images: str) -> None:
    """The unreadable files [(path, error)] of a folder of `total`: an error listing them under
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
