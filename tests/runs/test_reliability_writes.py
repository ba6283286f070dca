"""Writes the storage refuses (a full disk, an I/O error, a read-only file system): each one is a
WriteError naming the file, the space it needs and the fix, with nothing half-written left and the
earlier file as it was; the start check counts train.keep_checkpoints + 1 checkpoints."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch

from conftest import TINY
from sparsehead import cli, config
from sparsehead.core import atomic
from sparsehead.core.atomic import WriteError, atomic_write_json, atomic_write_text
from sparsehead.runs import checkpoint
from sparsehead.runs.folder import RunDir
from sparsehead.runs.metrics_log import MetricLogger, read_metrics

REASONS = {errno.ENOSPC: "No space left on device", errno.EIO: "Input/output error", errno.EROFS: "Read-only"}


class FailingFile:
    """A real file that takes `room` bytes, then fails its writes with `err_no` (after a partial write)."""

    def __init__(self, f, room: int, err_no: int):
        self.f, self.room, self.err_no = f, room, err_no

    def write(self, data):
        if len(data) > self.room:
            self.f.write(data[: self.room])
            self.room = 0
            raise OSError(self.err_no, os.strerror(self.err_no))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def storage_fails(monkeypatch, err_no: int, room: int = 100, only: str = ""):
    """Every atomic write from now on fails with `err_no` after `room` bytes, appends too; with
    `only`, just the atomic writes of files whose name holds it."""
    real_fdopen, real_write, real_mkstemp = os.fdopen, os.write, atomic.tempfile.mkstemp
    names = []

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        names.append(name)
        return fd, name

    def fdopen(*args, **kwargs):
        f = real_fdopen(*args, **kwargs)
        return FailingFile(f, room, err_no) if only in os.path.basename(names[-1]) else f

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(atomic.os, "fdopen", fdopen)
    if only:
        return

    def write(fd, data):
        if len(data) > room:
            real_write(fd, bytes(data[:room]))
            raise OSError(err_no, os.strerror(err_no))
        return real_write(fd, data)

    monkeypatch.setattr(atomic.os, "write", write)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


@pytest.mark.parametrize("err_no", sorted(REASONS))
def test_a_refused_checkpoint_write_is_one_clear_error_and_the_previous_one_stays(tmp_path, monkeypatch, err_no):
    state = {"model": {"w": torch.arange(300_000, dtype=torch.float32)}}
    first = checkpoint.save(tmp_path, state, step=1)
    storage_fails(monkeypatch, err_no, room=5000)  # torch.save turns this into a RuntimeError of its own
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.save(tmp_path, state, step=2)
    message = str(caught.value)
    assert "\n" not in message and REASONS[err_no] in message and "ckpt-00000002.pt" in message
    assert "ckpt-00000001.pt is intact" in message and f"--resume {tmp_path}" in message
    if err_no == errno.ENOSPC:  # the space needed: the tensors' 1.1 MiB
        assert "it needs about 1.1 MiB" in message and "MiB free in" in message
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [first.name] and not leftovers(tmp_path)
    assert torch.equal(checkpoint.load(first)["model"]["w"], state["model"]["w"])


def test_a_failed_fsync_is_a_write_error_and_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"old": 1})

    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomic.os, "fsync", fsync)  # a delayed allocation failing at fsync
    with pytest.raises(WriteError, match=r"cannot write .*results.json: Input/output error; .*check it"):
        atomic_write_json(target, {"new": 2})
    assert json.loads(target.read_text()) == {"old": 1} and not leftovers(tmp_path)


def test_a_write_error_is_an_oserror_so_a_cache_still_treats_it_as_a_cost(tmp_path, monkeypatch):
    storage_fails(monkeypatch, errno.ENOSPC, room=0)
    with pytest.raises(OSError) as caught:
        atomic_write_text(tmp_path / "x.txt", "x" * 3 * 2**20)
    assert caught.value.errno == errno.ENOSPC and "it needs about 3.0 MiB" in str(caught.value)


@pytest.mark.parametrize("err_no", sorted(REASONS))
def test_config_records_and_metrics_writes_name_the_file(tmp_path, tiny_cfg, monkeypatch, err_no):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    logger = MetricLogger(run.path, loggers=())
    logger.log({"step": 1, "loss": 1.0})
    storage_fails(monkeypatch, err_no, room=10)
    writes = {
        run.run_file: lambda: run.write_config(tiny_cfg()),  # run.json, then config.yaml
        run.config_path: lambda: config.save(tiny_cfg(), run.config_path),
        run.results_path: lambda: run.write_results({"steps": 1}),
        run.eval_path("knn"): lambda: run.write_eval("knn", {"r": {}}),
        run.environment_path: lambda: run.write_environment({"host": "h"}),
        run.metrics_path: lambda: logger.log({"step": 2, "loss": 0.5}),
    }
    for path, write in writes.items():
        with pytest.raises(WriteError) as caught:
            write()
        assert str(path) in str(caught.value) and REASONS[err_no] in str(caught.value), path
    assert read_metrics(run.path) == [{"step": 1, "loss": 1.0}]  # the half-written line was cut back off
    assert run.metrics_path.read_text() == json.dumps({"step": 1, "loss": 1.0}) + "\n"
    assert not leftovers(run.path)


def test_a_full_disk_mid_run_ends_the_command_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    storage_fails(monkeypatch, errno.ENOSPC, room=0, only="ckpt-00000003")  # the third checkpoint finds the disk full
    run_dir = tmp_path / "run"
    args = ["pretrain", *TINY, "train.checkpoint_every=1", "train.max_steps=5", "--run-dir", str(run_dir)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: could not write a checkpoint, cannot write ") and "No space left on device" in err
    monkeypatch.undo()
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == ["ckpt-00000001.pt", "ckpt-00000002.pt"]
    assert [r["step"] for r in read_metrics(run_dir)][:3] == [1, 2, 3]
    assert not leftovers(run_dir)


def test_the_start_check_counts_keep_plus_one_checkpoints(tmp_path, monkeypatch):
    model = torch.nn.Linear(256, 256)  # 257 KiB of state: a checkpoint of about 771 KiB
    size = 3 * checkpoint.nbytes(model.state_dict())
    checkpoint.check_writable(tmp_path)

    def free(n_bytes):
        monkeypatch.setattr(
            shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12 - n_bytes, n_bytes)
        )

    free(4 * size + 1)
    checkpoint.check_free_space(tmp_path, model, keep=3)  # 3 kept + 1 being written
    free(4 * size - 1)
    with pytest.raises(checkpoint.CheckpointError, match=r"room for 4 more \(train.keep_checkpoints=3 kept plus"):
        checkpoint.check_free_space(tmp_path, model, keep=3)
    for step in (1, 2):  # a resumed run's checkpoints already hold their space
        checkpoint.save(tmp_path, {"model": {}}, step)
    free(2 * size + 1)
    checkpoint.check_free_space(tmp_path, model, keep=3)
    free(2 * size - 1)
    with pytest.raises(checkpoint.CheckpointError, match=r"room for 2 more .* 2 there now"):
        checkpoint.check_free_space(tmp_path, model, keep=3)
    checkpoint.save(tmp_path, {"model": {}}, 3)
    free(size - 1)  # a full folder still needs room for the one being written
    with pytest.raises(checkpoint.CheckpointError, match=r"room for 1 more .* 3 there now"):
        checkpoint.check_free_space(tmp_path, model, keep=3)


def test_the_default_keep_is_the_config_default():
    assert config.load(None, []).train.keep_checkpoints == checkpoint.check_free_space.__defaults__[0]
