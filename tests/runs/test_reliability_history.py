"""Nothing that holds results is lost: only a damaged checkpoint file is set aside, any failure inside
the loader lets resume fall back to the next older checkpoint, and a run folder whose checkpoints all
fail to load stops with the way on (`--force` moves its history aside) instead of starting over in
place."""

from __future__ import annotations

import errno
import os
import pickle
from contextlib import nullcontext

import pytest
import torch

from conftest import TINY
from sparsehead import cli
from sparsehead.runs import checkpoint
from sparsehead.runs.folder import RunDir
from sparsehead.runs.metrics_log import MetricLogger, read_metrics
from sparsehead.training import resume

STATE = {"model": {"w": torch.arange(64, dtype=torch.float32)}, "format": checkpoint.FORMAT}


def saved(folder, step: int):
    return checkpoint.save(folder, STATE, step)


def loader_raising(monkeypatch, error: Exception, only: str = ""):
    """torch.load raises `error` (for files whose name holds `only`), as a loader bug or a newer writer's type would."""
    real = torch.load

    def load(path, *args, **kwargs):
        if only in os.fspath(path):
            raise error
        return real(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)


@pytest.mark.parametrize(
    "error", [AttributeError("'NoneType' has no attribute 'x'"), TypeError("bad"), MemoryError(), StopIteration()]
)
def test_any_failure_inside_the_loader_is_a_checkpoint_error_that_does_not_mark_the_file_damaged(
    tmp_path, monkeypatch, error
):
    path = saved(tmp_path, 1)
    loader_raising(monkeypatch, error)
    with pytest.raises(checkpoint.CheckpointError, match="its archive is intact") as caught:
        checkpoint.load(path)
    assert not caught.value.damaged


def test_a_read_error_is_not_damage_but_truncation_and_flipped_bytes_are(tmp_path, monkeypatch):
    path = saved(tmp_path, 1)
    data = path.read_bytes()
    for cut in (0, 100, len(data) // 2, len(data) - 1):  # truncated: the archive itself is bad
        path.write_bytes(data[:cut])
        with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupt") as caught:
            checkpoint.load(path)
        assert caught.value.damaged
    flipped = bytearray(data)  # a bit of the tensor, stored verbatim: torch.load itself would not notice
    flipped[data.find(STATE["model"]["w"].numpy().tobytes()) + 9] ^= 4
    path.write_bytes(bytes(flipped))
    with pytest.raises(checkpoint.CheckpointError, match="does not match the digest") as caught:
        checkpoint.load(path)
    assert caught.value.damaged
    path.write_bytes(data)
    loader_raising(monkeypatch, OSError(errno.EIO, os.strerror(errno.EIO)))
    with pytest.raises(checkpoint.CheckpointError, match="cannot read checkpoint .*Input/output error") as caught:
        checkpoint.load(path)
    assert not caught.value.damaged


def test_a_pickle_asking_for_python_objects_is_refused_not_set_aside(tmp_path):
    path = checkpoint.checkpoint_dir(tmp_path) / "ckpt-00000002.pt"
    saved(tmp_path, 1)
    torch.save({"model": {}, "x": pickle.PickleError("an object")}, path)
    with pytest.warns(UserWarning, match="skipping checkpoint ckpt-00000002.pt, left in place: refusing"):
        found, _ = checkpoint.latest_loadable(tmp_path, set_aside=True)
    assert found.name == "ckpt-00000001.pt" and path.is_file()


def test_resume_falls_back_past_unreadable_and_refused_files_and_sets_aside_only_damaged_ones(tmp_path, monkeypatch):
    first, second, third = (saved(tmp_path, step) for step in (1, 2, 3))
    second.write_bytes(second.read_bytes()[:-50])  # damaged
    loader_raising(monkeypatch, OSError(errno.EIO, "Input/output error"), only=third.name)  # a transient read error
    with pytest.warns(UserWarning) as warned:
        found, state = checkpoint.latest_loadable(tmp_path, set_aside=True)
    assert found == first and torch.equal(state["model"]["w"], STATE["model"]["w"])
    assert third.is_file()  # left in place: a later read may work
    assert not second.exists() and second.with_name(second.name + checkpoint.DAMAGED).is_file()
    assert [str(w.message).split(":")[0] for w in warned] == [
        "skipping checkpoint ckpt-00000003.pt, left in place",
        f"skipping damaged checkpoint (renamed to ckpt-00000002.pt{checkpoint.DAMAGED})",
    ]


@pytest.fixture
def tiny_run(tmp_path, one_thread):
    """A finished 3-step run (a checkpoint every step, 3 metrics records)."""
    run_dir = tmp_path / "run"
    args = [*TINY, "train.max_steps=3", "train.checkpoint_every=1", "train.threads=1"]
    assert cli.main(["pretrain", *args, "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_a_run_whose_checkpoints_all_fail_to_load_is_never_restarted_in_place(tiny_run, capsys):
    run = RunDir(tiny_run)
    before = read_metrics(tiny_run)
    steps = [r["step"] for r in before]
    assert steps == [1, 2, 3, 3]  # the last: the final k-NN
    for path in checkpoint.list_checkpoints(tiny_run):
        path.write_bytes(path.read_bytes()[:1000])
    for attempt in range(2):  # the second finds only the files set aside: still history
        capsys.readouterr()
        with pytest.warns(UserWarning, match="skipping damaged checkpoint") if attempt == 0 else nullcontext():
            assert cli.main(["pretrain", "--resume", str(tiny_run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"error: no checkpoint in {run.checkpoints_dir} loads") and "--force" in err, attempt
        assert read_metrics(tiny_run) == before and run.results_path.is_file()
    assert len(list(run.checkpoints_dir.glob(f"*{checkpoint.DAMAGED}"))) == 3

    capsys.readouterr()
    with pytest.warns(UserWarning, match="starting afresh .--force., its history moved into"):
        assert cli.main(["pretrain", "--resume", str(tiny_run), "--force"]) == 0
    (aside,) = tiny_run.glob("previous-*")
    assert read_metrics(aside) == before and len(list((aside / "checkpoints").iterdir())) == 3
    assert (aside / "results.json").is_file() and (aside / "environment.json").is_file()
    assert [r["step"] for r in read_metrics(tiny_run)] == steps  # the fresh run's own
    assert [p.name for p in checkpoint.list_checkpoints(tiny_run)] == [f"ckpt-0000000{s}.pt" for s in (1, 2, 3)]
    assert {p.name for p in tiny_run.iterdir()} >= {"config.yaml", "run.json", aside.name}


def test_a_damaged_environment_record_stops_the_run_before_any_work(tiny_run):
    env = RunDir(tiny_run).environment_path
    for damage in (b"\x00\xff binary", b"[1, 2]", b'{"attempts": 3}', b"{ not json"):
        env.write_bytes(damage)
        with pytest.raises(checkpoint.CheckpointError, match=f"{env}.*move it aside .*and run again"):
            resume.resume_point(tiny_run, RunDir(tiny_run).read_config())
        assert env.read_bytes() == damage


def test_a_resumed_run_cuts_back_only_the_records_after_its_step_and_keeps_damaged_lines(tmp_path):
    metrics = RunDir(tmp_path).metrics_path
    lines = [b'{"step": 1, "loss": 2.0}\n', b"\x00\xff damaged \x80\n", b"7\n", b'{"step": 2}\n', b'{"step": 3}\n']
    metrics.write_bytes(b"".join(lines) + b'{"step": 4, "lo')  # a torn last line
    MetricLogger(tmp_path, loggers=(), start_step=2)
    assert metrics.read_bytes() == b"".join(lines[:4]) + b'{"step": 4, "lo\n'
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}, {"step": 2}]


def test_history_that_cannot_be_moved_aside_is_a_clear_error_and_stays(tmp_path, monkeypatch, tiny_cfg):
    path = saved(tmp_path, 1)
    path.write_bytes(b"not a checkpoint")
    RunDir(tmp_path).metrics_path.write_text('{"step": 1}\n')

    def read_only(*args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("sparsehead.runs.folder.os.replace", read_only)
    with pytest.warns(UserWarning, match="skipping damaged"):
        with pytest.raises(checkpoint.CheckpointError, match="cannot move the history of .*Read-only file system"):
            resume.resume_point(tmp_path, tiny_cfg(), force=True)
    assert read_metrics(tmp_path) == [{"step": 1}]
