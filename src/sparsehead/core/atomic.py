"""File writes that fail cleanly: a reader sees the old file or the new one, never half of one, and a
write the storage refuses (no space, an I/O error, a read-only or unwritable folder) is one WriteError
naming the file, the space it needs and the fix, with nothing half-written left behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

from sparsehead.core.errors import SparseheadError

UMASK = os.umask(0o022)  # reading the umask means setting it: put it straight back
os.umask(UMASK)

# What to do about each way storage refuses a write; any other errno gets the permissions advice.
_FIXES = {
    errno.ENOSPC: "free space there or write to another place",
    errno.EDQUOT: "free space within your quota there or write to another place",
    errno.EIO: "the storage reported an I/O error (a failing disk or network file system): check it, then run again",
    errno.EROFS: "the file system is read-only: write to another place, or remount it read-write",
}
_DEFAULT_FIX = "make the folder writable (check its permissions and owner) or write to another place"


class WriteError(SparseheadError, OSError):
    """A file that could not be written, why, and what to do. An OSError too (with the original
    errno), so code that treats a failed write as a cost (a cache) still catches it as one."""

    def __init__(self, message: str, err_no: Optional[int] = None, filename: Optional[str] = None):
        super().__init__(message)
        self.errno, self.filename = err_no, filename

    def __str__(self) -> str:
        return self.args[0]


def write_error(path: str | os.PathLike, err: OSError, needed: Optional[int] = None) -> WriteError:
    """The WriteError of `err` (raised writing `path`); `needed`: the bytes the file takes, if known."""
    path = Path(path)
    reason = err.strerror or str(err) or type(err).__name__
    space = ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(path.parent)
        size = f"about {_mib(needed)}" if needed else "more than is free"
        space = f" (it needs {size}; {_mib(free) if free is not None else 'an unknown amount'} free in {path.parent})"
    fix = _FIXES.get(err.errno, _DEFAULT_FIX)
    return WriteError(f"cannot write {path}: {reason}{space}; {fix}", err.errno, str(path))


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _free_bytes(folder: Path) -> Optional[int]:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


class _Recording:
    """A file object that remembers the first OSError of its writes: torch.save turns one into a
    RuntimeError ("unexpected pos ..."), which must still read as the full disk it was."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def atomic_write(
    path: str | os.PathLike, write: Callable[[object], None], mode: str = "wb", needed: Optional[int] = None
) -> None:
    """Write through `write(file)` into a temporary file beside `path`, fsync, then rename.

    `needed`: the file's size when known, for the message of a full disk. Raises WriteError when the
    storage refuses; the temporary file is then removed and any earlier `path` is left as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, mode) as raw:
            os.fchmod(raw.fileno(), 0o666 & ~UMASK)  # mkstemp makes it owner-only; give the usual permissions
            f = _Recording(raw)
            try:
                write(f)
            except Exception as err:
                if f.error is None or isinstance(err, OSError):
                    raise
                raise f.error from err
            raw.flush()
            os.fsync(raw.fileno())  # where a delayed allocation finds the disk full
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)  # make the rename itself durable
    except OSError as err:
        raise write_error(path, err, needed) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w", needed=len(text.encode()))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append `text` to `path` (a log of records); a write the storage refuses is cut back off, so the
    next record never lands glued to half of this one, and raises WriteError."""
    data = text.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as err:
        raise write_error(path, err, len(data)) from None
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as err:
            with contextlib.suppress(OSError):  # best effort: the storage may refuse this too
                os.ftruncate(fd, start)
            raise write_error(path, err, len(data)) from None
    finally:
        os.close(fd)


def check_writable(folder: str | os.PathLike) -> None:
    """Before any work: `folder` can be created and a file written in it (WriteError if not)."""
    folder = Path(folder)
    probe = folder / ".write-test"
    atomic_write(probe, lambda f: f.write(b"ok"))
    try:
        probe.unlink()
    except OSError as err:
        raise write_error(probe, err) from None
