"""The on-disk caches of folder data sets (decoded images, file indexes): one way to read and write
them. A damaged cache is rebuilt, never trusted; a cache that cannot be written costs speed, not the run."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional

import torch

from sparsehead.core.atomic import atomic_write


def read_cache(path: Path, what: str, redo: str, fresh: Callable[[dict], bool] = lambda blob: True) -> Optional[dict]:
    """The blob cached at `path`; None where there is none, where `fresh(blob)` says it is out of date,
    or where it is damaged (`fresh` raising counts as damage too), warned as "ignoring damaged {what}"."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return blob if fresh(blob) else None
    except Exception as err:
        warnings.warn(f"ignoring damaged {what} {path} ({err}); {redo}")
        return None


def write_cache(path: Path, blob: dict, what: str) -> None:
    try:
        atomic_write(path, lambda f: torch.save(blob, f))
    except OSError as err:
        warnings.warn(f"could not write the {what} {path} ({err}); continuing without it")
