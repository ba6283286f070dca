"""One writer per run folder: the process that writes a run holds an exclusive flock on RUN/.lock.

A second process that would write the same folder (a pretraining started twice, a resume while the
run still runs) is refused at its start with the holder's pid and host, instead of interleaving
checkpoints and metrics with it. The kernel drops a flock when its holder exits or is killed, so a
lock file left behind by a killed run never blocks the next one; the file itself stays (deleting it
would let two processes lock two different files of one name). Readers (evaluate, analyze, report)
take no lock: reading a live run is allowed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Optional

from sparsehead.core.atomic import write_error
from sparsehead.runs.folder import RunDir, RunDirError


class RunFolderBusy(RunDirError):
    """The run folder is being written by another live process."""


class RunLock:
    """`with RunLock(run_dir):` or `lock = RunLock(run_dir).acquire()` ... `lock.release()`."""

    def __init__(self, run_dir: str | Path):
        self.run = RunDir(run_dir)
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        """Take the lock now or raise RunFolderBusy naming the process that holds it."""
        path = self.run.lock_path
        try:
            self.run.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise write_error(path, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _holder(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RunFolderBusy(
                    f"run folder {self.run.path} is in use by {holder} (it holds {path}); wait for that run "
                    "to end or stop it, or give this one another folder (--run-dir or train.run_name)"
                ) from None
            # a file system without locks (ENOLCK, EOPNOTSUPP): run, but unguarded, and say so
            warnings.warn(f"cannot lock {path} ({err.strerror}): nothing keeps a second process out of this run")
            return self
        self.fd = fd
        _write_holder(fd)
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _write_holder(fd: int) -> None:
    """Who holds the lock, for the message of a process refused (best effort: the flock is the lock)."""
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except OSError:
        pass


def _holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"process {record['pid']} on {record['host']} (since {record['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
