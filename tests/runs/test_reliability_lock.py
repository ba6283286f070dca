"""One writer per run folder: a live holder of RUN/.lock keeps a second process out (named in the
message); the lock goes with its holder, so a lock file left by a killed process never blocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import SRC
from sparsehead.runs.folder import RunDir
from sparsehead.runs.lock import RunFolderBusy, RunLock

HOLD = """
import sys, time
from sparsehead.runs.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def holder(run_dir):
    """A separate process holding the run folder's lock (started, and holding, when this returns)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_kept_out_of_a_live_run_folder_and_a_killed_holder_blocks_nothing(tmp_path):
    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    try:
        with pytest.raises(RunFolderBusy) as caught:
            RunLock(run_dir).acquire()
        message = str(caught.value)
        assert f"in use by process {proc.pid} on " in message and str(run_dir) in message and "\n" not in message
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert RunDir(run_dir).lock_path.is_file()  # the file of the killed holder is still there ...
    with RunLock(run_dir):  # ... and does not block
        pass


def test_the_lock_is_released_on_exit_and_is_exclusive_within_a_process_too(tmp_path):
    lock = RunLock(tmp_path).acquire()
    with pytest.raises(RunFolderBusy, match=f"in use by process {os.getpid()} "):
        RunLock(tmp_path).acquire()
    lock.release()
    lock.release()  # a second release is harmless
    with RunLock(tmp_path):
        with pytest.raises(RunFolderBusy):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()


def test_a_lock_file_in_an_unwritable_place_is_a_write_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OSError, match="cannot write .*a-file"):
        RunLock(tmp_path / "a-file" / "run").acquire()
