"""The stop contract outside the steps: a stop signal during setup, during the last checkpoint write or
during the final evaluation ends the command with the state saved and PreemptedError (exit status 75);
the same command then finishes the run. In-process, the signal sent by the run to itself at the phase."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from conftest import NO_ALARM, TINY
from sparsehead import config
from sparsehead.runs import checkpoint
from sparsehead.training import finish, loop, run, setup
from sparsehead.training.preempt import PreemptedError

RUN = TINY + [NO_ALARM, "data.subset=128", "train.epochs=2", "train.threads=1", "train.checkpoint_every=0"]
LAST_STEP = 4  # 128 images, batch 64 (TINY), 2 epochs


def _sigterm_then(call):
    def wrapped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets the flag (or, at the end, raises)
        return call(*args, **kwargs)

    return wrapped


def _saved_steps(run_dir) -> list[int]:
    return [int(checkpoint.PATTERN.search(p.name).group(1)) for p in checkpoint.list_checkpoints(run_dir)]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "phase, module, name, stopped_at",
    [
        ("setup", setup, "training_data", 1),  # caught in setup: the first step boundary stops the run
        ("last checkpoint", run.checkpoint, "save", LAST_STEP),  # after it: no final evaluation
        ("final evaluation", finish, "knn_summary", LAST_STEP),  # during it: at once
    ],
)
def test_a_stop_in_each_phase_saves_the_state_and_the_same_command_finishes(
    phase, module, name, stopped_at, monkeypatch, tmp_path, one_thread
):
    cfg = config.load(None, RUN)
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(module, name, _sigterm_then(getattr(module, name)))
        with pytest.raises(PreemptedError, match=f"stopped by SIGTERM after step {stopped_at} with a checkpoint"):
            loop.pretrain(cfg, run_dir)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
    assert _saved_steps(run_dir) == [stopped_at], phase
    assert not (run_dir / "results.json").exists()

    summary = loop.pretrain(cfg, run_dir)  # the same command again: it finishes
    assert summary["steps"] == LAST_STEP and (run_dir / "results.json").exists()
    assert _saved_steps(run_dir)[-1] == LAST_STEP


def test_a_second_writer_is_kept_out_of_a_live_run_folder_and_let_in_after(monkeypatch, tmp_path, one_thread):
    from sparsehead.runs.lock import RunFolderBusy, RunLock

    cfg = config.load(None, RUN)
    run_dir = tmp_path / "run"
    refused = []

    def knn_while_running(*args, **kwargs):
        with pytest.raises(RunFolderBusy) as busy:
            RunLock(run_dir).acquire()
        refused.append(str(busy.value))
        return real(*args, **kwargs)

    real = finish.knn_summary
    monkeypatch.setattr(finish, "knn_summary", knn_while_running)
    loop.pretrain(cfg, run_dir)
    assert refused and str(os.getpid()) in refused[0]
    RunLock(run_dir).acquire().release()  # released at the end of the run
