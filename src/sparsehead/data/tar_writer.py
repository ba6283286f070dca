"""Tar files for WebDataset shards: one shard written from image bytes read ahead, and read back.

A shard is a plain (ustar) tar: each sample KEY.<ext> (the image's bytes) then KEY.cls (its label as
text), owner, mode and times fixed, so that the same samples make the same bytes on every run. Its
sha256 is taken as it is written. The image files are read by a few threads ahead of the writer:
on a network file system each read waits on the server, and the waits overlap.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from sparsehead.core.atomic import atomic_write
from sparsehead.data.errors import DataError

_BLOCK = 512  # tar's block: a member is a header block and its data padded to whole blocks


@dataclass(frozen=True)
class Limits:
    """When a shard is full: `samples` samples or `bytes` bytes (None: no such limit), whichever
    comes first; a shard holds at least one sample, however large."""

    samples: Optional[int] = None
    bytes: Optional[int] = None

    def admits(self, count: int, offset: int, image_size: int) -> bool:
        if count == 0:
            return True
        members = 3 * _BLOCK + -(-image_size // _BLOCK) * _BLOCK  # the image's header and data, the label's
        end = -(-(offset + members + 2 * _BLOCK) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE  # tar pads to records
        return (self.samples is None or count < self.samples) and (self.bytes is None or end <= self.bytes)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:  # a DataError: inside a shard's write an OSError would read as the shard's fault
        raise DataError(f"cannot read {path} ({err.strerror or err}); check that it exists and is readable") from None


class _Hashing:
    """The shard's file as tarfile writes it, hashed on the way (sha256 without reading it back)."""

    def __init__(self, f):
        self._f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data):
        self.sha256.update(data)
        self.size += len(data)
        return self._f.write(data)

    def tell(self):
        return self._f.tell()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # owner, mode and time fixed: the same shard on every run
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


class Ahead:
    """The bytes of image files in their order, read by `threads` threads up to `window` files ahead
    of the writer (reads overlap where each waits on a network file system)."""

    def __init__(self, paths: list[str], threads: int, window: int = 64):
        self._paths, self._window = iter(paths), window
        self._pool, self._pending = ThreadPoolExecutor(max_workers=threads), deque()

    def peek(self) -> bytes:
        """The next file's bytes, left to take()."""
        for path in self._paths:
            self._pending.append(self._pool.submit(_read, path))
            if len(self._pending) >= self._window:
                break
        return self._pending[0].result()

    def take(self) -> bytes:
        data = self.peek()
        self._pending.popleft()
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._pool.shutdown(wait=True, cancel_futures=True)


def write_shard(
    path: Path, sample: Callable[[int], tuple[str, int]], start: int, total: int, ahead: Ahead, limits: Limits, bar
) -> dict:
    """One shard at `path`, written atomically: the samples `start`, `start` + 1, ... (below `total`)
    that `limits` admit, `sample(i)` -> (KEY, label) of the i-th, the i-th image's bytes from
    `ahead` as KEY's image member (one that does not fit stays there for the next shard). Returns
    its samples, bytes and sha256."""
    done = {}

    def write(f):
        out = _Hashing(f)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            count = 0
            while start + count < total and limits.admits(count, tar.offset, len(ahead.peek())):
                image, label = sample(start + count)
                _add(tar, image, ahead.take())
                _add(tar, image.partition(".")[0] + ".cls", str(label).encode())
                count += 1
                bar.update(1)
        done.update(samples=count, bytes=out.size, sha256=out.sha256.hexdigest())

    atomic_write(path, write)
    return done


def read_back(path: Path) -> tuple[Optional[list[str]], str]:
    """The member names of a shard on disk (None: not a readable tar) and its sha256."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    try:
        with tarfile.open(path, "r:") as tar:
            return tar.getnames(), sha.hexdigest()
    except (tarfile.TarError, EOFError):
        return None, sha.hexdigest()
