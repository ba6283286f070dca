"""The on-disk caches of folder data sets (decoded images, file indexes): one way to read and write
them. A damaged cache is rebuilt, never trusted; a cache that cannot be written costs speed, not the run.

The processes of a node share one decoded set: the first to take a cache's lock builds it while the
others wait (no collective, so no timeout however long the decoding), then every process maps the
file (torch.load(mmap=True)): its pages sit once in the page cache, whatever the number of processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from sparsehead.core.atomic import atomic_write


@contextlib.contextmanager
def building(path: Path) -> Iterator[None]:
    """One process at a time (of those sharing the cache folder) inside the block for `path`: an
    exclusive lock on `path`.lock, released by the system if the process dies."""
    lock = path.with_name(path.name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
    except OSError:  # a cache folder that cannot hold a lock: each process builds its own copy
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # the lock goes with the file's closing


def read_cache(
    path: Path, what: str, redo: str, fresh: Callable[[dict], bool] = lambda blob: True, mapped: bool = False
) -> Optional[dict]:
    """The blob cached at `path`; None where there is none, where `fresh(blob)` says it is out of date,
    or where it is damaged (`fresh` raising counts as damage too), warned as "ignoring damaged {what}".
    `mapped`: its tensors are the file's pages, mapped (shared with every process mapping them)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
        return blob if fresh(blob) else None
    except Exception as err:
        warnings.warn(f"ignoring damaged {what} {path} ({err}); {redo}")
        return None


def write_cache(path: Path, blob: dict, what: str) -> None:
    try:
        atomic_write(path, lambda f: torch.save(blob, f))
    except OSError as err:
        warnings.warn(f"could not write the {what} {path} ({err}); continuing without it")
