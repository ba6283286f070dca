"""The on-disk caches of folder data sets (decoded images, file indexes, bad-image lists): one way to
read and write them. A damaged cache is rebuilt, never trusted; a cache that cannot be written (a
read-only or full disk) costs speed, never the run: a one-line warning, and the run goes on without it.

The processes of a node share one decoded set: the first to take a cache's lock builds it while the
others wait (no collective, so no timeout however long the decoding), then every process maps the
file (torch.load(mmap=True)): its pages sit once in the page cache, whatever the number of processes.

A cache file is only ever written under its lock, so a temporary file whose lock is free belongs to
a writer that died (a killed build leaves a full-size one): taking a lock removes those of the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from sparsehead.core.atomic import atomic_write

# core.atomic.atomic_write's temporary file beside `<target>`: ".<target>.<mkstemp's 8 characters>.tmp"
_TEMP_FILE = re.compile(r"^\.(?P<target>.+\.pt)\.[a-z0-9_]{8}\.tmp$")
_HELD: set[Path] = set()  # the cache locks this process holds (a write inside a build takes its lock again)


def _lock_of(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def building(path: Path) -> Iterator[None]:
    """One process at a time (of those sharing the cache folder) inside the block for `path`: an
    exclusive lock on `path`.lock, released by the system if the process dies; the first to enter
    removes the folder's stale temporary files. Re-entered by the process holding it, it waits for nothing."""
    lock = _lock_of(path)
    if lock in _HELD:
        yield
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
    except OSError:  # a cache folder that cannot hold a lock: each process builds its own copy
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _HELD.add(lock)
        try:
            remove_stale_temps(lock.parent)
            yield
        finally:
            _HELD.discard(lock)  # the lock itself goes with the file's closing


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary cache files in `folder` that no live writer holds (their target's lock is
    free, or held by this process, which writes nothing while it cleans); returns those deleted."""
    try:
        with os.scandir(folder) as entries:
            temps = [(Path(e.path), m["target"]) for e in entries if (m := _TEMP_FILE.match(e.name))]
    except OSError:
        return []
    removed = []
    for temp, target in temps:
        lock = folder / (target + ".lock")
        try:
            if lock in _HELD:
                temp.unlink(missing_ok=True)
            else:
                with open(lock, "a") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live writer
                    temp.unlink(missing_ok=True)  # while holding it: no writer can start meanwhile
            removed.append(temp)
        except OSError:
            continue
    return removed


def one_line(err: BaseException) -> str:
    """The cause of `err` in one line: the system error under it where there is one (torch.save
    reports a failed write as a RuntimeError about zip offsets, the OSError as its context)."""
    seen = err
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    if isinstance(seen, OSError) and seen.strerror:
        return seen.strerror
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def read_cache(
    path: Path, what: str, redo: str, fresh: Callable[[dict], bool] = lambda blob: True, mapped: bool = False
) -> Optional[dict]:
    """The blob cached at `path`; None where there is none, where `fresh(blob)` says it is out of date,
    or where it is damaged (`fresh` raising counts as damage too), warned in one line as "ignoring
    damaged {what}". `mapped`: its tensors are the file's pages, mapped (shared with every process mapping them)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
        if not isinstance(blob, dict):
            raise ValueError(f"holds a {type(blob).__name__}, not a cache")
        return blob if fresh(blob) else None
    except Exception as err:
        warnings.warn(f"ignoring damaged {what} {path} ({one_line(err)}); {redo}")
        return None


def write_cache(path: Path, blob: dict, what: str) -> None:
    """Write `blob` at `path` atomically, under its lock; a failed write is a warning, not an error."""
    with building(path):
        try:
            atomic_write(path, lambda f: torch.save(blob, f))
        except (OSError, RuntimeError) as err:
            warnings.warn(
                f"could not write the {what} {path} ({one_line(err)}); continuing without it (slower: "
                f"it is rebuilt on each use); free space in data.cache_dir, point it elsewhere, or set it to null"
            )


def can_write(cache_dir: Optional[str], needed: int = 0) -> bool:
    """Whether a cache of `needed` bytes can be written in `cache_dir` (None: caching is off): the folder
    exists or can be made, takes a new file, and has that much free. The processes of a node share a
    decoded set only then; else each decodes and holds its own (a cache built earlier is not looked for:
    the count errs on the safe side)."""
    if not cache_dir:
        return False
    folder = Path(cache_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return shutil.disk_usage(folder).free >= needed
    except OSError:
        return False
