"""Pre-emption: a run sent SIGTERM or SIGUSR1 writes one checkpoint at the next step boundary and
exits 75; resumed, it ends bitwise equal to an unbroken run. train.on_preempt=requeue asks SLURM to
requeue the job (a stand-in scontrol here). The fp16 update the GradScaler skipped runs no hooks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import SRC, TINY, TINY_FOLDER, assert_same_training_state, make_imagefolder, run_cli, start_cli
from ddp_harness import torchrun_sparsehead, torchrun_workers
from sparsehead import config
from sparsehead.core.errors import EXIT_INTERRUPTED
from sparsehead.core.signals import StopFlag, StopSignals
from sparsehead.runs import checkpoint
from sparsehead.training import preempt

# BYOL (EMA target, predictor), 4 steps per epoch over 10 epochs: long enough for a signal to land
# mid-run; checkpoint_every=0, so the pre-emption's is the only checkpoint before the end.
RUN = TINY + [
    "data.subset=256",
    "data.storage=memory",
    "train.epochs=10",
    "train.threads=1",
    "train.checkpoint_every=0",
    "method.name=byol",
    "method.predictor_hidden_dim=32",
]
TOTAL_STEPS = 40
ENV = {"OMP_NUM_THREADS": "1"}


def _start(run_dir: Path, *extra: str, env: dict | None = None, run: list[str] = RUN):
    return start_cli("pretrain", *run, *extra, "--run-dir", str(run_dir), env={**ENV, **(env or {})})


def _logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return sum(1 for line in path.read_text().splitlines() if "loss" in json.loads(line)) if path.exists() else 0


def _signal_after(proc, run_dir: Path, sig: int, steps: int = 3) -> int:
    """Send `sig` once the run has logged `steps` steps; the number logged just before sending."""
    deadline = time.monotonic() + 300
    while (logged := _logged_steps(run_dir)) < steps:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run logged no steps"
        time.sleep(0.02)
    proc.send_signal(sig)
    return logged


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """An unbroken run, in its own process as the signalled ones are."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = run_cli("pretrain", *RUN, "--run-dir", str(run_dir), env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


@pytest.mark.numerics
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=lambda s: s.name)
def test_signalled_run_checkpoints_exits_75_and_resumes_bitwise_exact(sig, reference_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    logged = _signal_after(proc, run_dir, sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_INTERRUPTED == 75, stderr[-2000:]
    assert f"stopped by {sig.name}" in stderr and f"--resume {run_dir}" in stderr
    saved = [int(checkpoint.PATTERN.search(p.name).group(1)) for p in checkpoint.list_checkpoints(run_dir)]
    # One checkpoint, after the step the signal arrived in (a step may end between the poll and the kill).
    assert len(saved) == 1 and logged <= saved[0] <= logged + 2 and saved[0] < TOTAL_STEPS, (logged, saved)
    assert not (run_dir / "results.json").exists()  # no final evaluation: the run is not finished

    resumed = run_cli("pretrain", "--resume", str(run_dir), env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"(step {saved[0]})" in resumed.stderr
    assert_same_training_state(
        checkpoint.load(checkpoint.find(run_dir)), checkpoint.load(checkpoint.find(reference_run)), TOTAL_STEPS
    )


# The same on streamed JPEGs (data.storage=stream): 64 images, 8 a batch, 5 epochs: 40 steps.
STREAM_RUN = [*TINY_FOLDER, "data.storage=stream", "data.workers=0", "train.epochs=5", "train.checkpoint_every=0"]


@pytest.mark.numerics
def test_signalled_stream_run_resumes_bitwise_exact(tmp_path):
    make_imagefolder(tmp_path / "d", per_class=32)
    run = [*STREAM_RUN, f"data.root={tmp_path / 'd'}"]
    reference = run_cli("pretrain", *run, "--run-dir", str(tmp_path / "ref"), env=ENV)
    assert reference.returncode == 0, reference.stderr[-2000:]
    run_dir = tmp_path / "run"
    proc = _start(run_dir, run=run)
    logged = _signal_after(proc, run_dir, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 75, stderr[-2000:]
    saved = [int(checkpoint.PATTERN.search(p.name).group(1)) for p in checkpoint.list_checkpoints(run_dir)]
    assert len(saved) == 1 and logged <= saved[0] <= logged + 2 and saved[0] < TOTAL_STEPS, (logged, saved)
    resumed = run_cli("pretrain", "--resume", str(run_dir), env=ENV)
    assert resumed.returncode == 0 and f"(step {saved[0]})" in resumed.stderr, resumed.stderr[-2000:]
    assert_same_training_state(
        checkpoint.load(checkpoint.find(run_dir)), checkpoint.load(checkpoint.find(tmp_path / "ref")), TOTAL_STEPS
    )


def test_requeue_calls_scontrol_under_slurm(tmp_path):
    bin_dir, record = tmp_path / "bin", tmp_path / "scontrol.args"
    bin_dir.mkdir()
    fake = bin_dir / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{record}"\n')
    fake.chmod(0o755)
    run_dir = tmp_path / "run"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    proc = _start(run_dir, "train.on_preempt=requeue", env=env)
    _signal_after(proc, run_dir, signal.SIGUSR1, steps=2)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 75, stderr[-2000:]
    assert record.read_text().split("\n")[:-1] == ["requeue 4242"]  # called once
    assert "the job was requeued" in stderr
    assert checkpoint.list_checkpoints(run_dir)


def test_requeue_outside_slurm_says_so(monkeypatch, capsys):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert preempt.requeue() is False
    assert "SLURM_JOB_ID is not set" in capsys.readouterr().err


@contextmanager
def sigint_disposition(handler):
    """SIGINT handled by `handler` inside the block, whatever this process inherited (`nohup make
    test &` starts it with SIGINT ignored); the inherited disposition is put back after."""
    inherited = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_stop_signals_set_a_flag_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    with sigint_disposition(signal.default_int_handler):
        with StopSignals(["SIGUSR1", "SIGINT"]) as stop:
            assert stop.requested is None
            os.kill(os.getpid(), signal.SIGUSR1)
            assert stop.requested == "SIGUSR1"
            with pytest.raises(KeyboardInterrupt):  # after a first signal, Ctrl-C aborts at once
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
        assert signal.getsignal(signal.SIGUSR1) is before
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_first_sigint_only_sets_the_flag():
    with sigint_disposition(signal.default_int_handler), StopSignals(["SIGINT"]) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested == "SIGINT"


def test_an_inherited_ignore_stays_ignored():
    """Started with SIGINT ignored (nohup, a background job), a run is not stopped by it; the other
    signals still stop it."""
    with sigint_disposition(signal.SIG_IGN):
        with StopSignals(["SIGINT", "SIGUSR1"]) as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            assert stop.requested is None
            os.kill(os.getpid(), signal.SIGUSR1)
            assert stop.requested == "SIGUSR1"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_unknown_signal_names_are_refused():
    with pytest.raises(config.ConfigError, match="SIGKILL"):
        StopSignals(["SIGKILL"])
    with pytest.raises(config.ConfigError, match="preempt_signals"):
        config.load(None, ["train.preempt_signals=[SIGSEGV]"])


def test_without_ddp_the_stop_flag_is_this_process_own():
    assert StopFlag().any_rank(None) is False
    assert StopFlag().any_rank("SIGTERM") is True


# --- DDP: two gloo ranks under torchrun stop after the same step --------------------------------

# 3 epochs (12 steps) of RUN: a 2-process gloo step on the CPU is slow (0.5 s), and a stop sent after
# step 2 still lands mid-run; the resumed run crosses an epoch boundary.
DDP_RUN = [o for o in RUN if not o.startswith("train.epochs=")] + ["train.epochs=3"]
DDP_TOTAL_STEPS = 12


@pytest.fixture(scope="module")
def reference_ddp_run(tmp_path_factory) -> Path:
    """An unbroken 2-process run, the one a stopped and resumed DDP run must equal."""
    run_dir = tmp_path_factory.mktemp("reference_ddp") / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), **ENV}
    proc = subprocess.run(
        torchrun_sparsehead("pretrain", *DDP_RUN, "--run-dir", str(run_dir)), env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers through /proc")
@pytest.mark.parametrize("ranks", [(0, 1), (1,)], ids=["both-ranks", "rank1-only"])
def test_ddp_ranks_stop_after_the_same_step_and_resume_bitwise_exact(ranks, reference_ddp_run, tmp_path):
    """SIGTERM to both ranks (as srun sends it) or to one: both stop after the same step with one
    checkpoint, and the resumed 2-process run ends bitwise equal to an unbroken one."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), **ENV}
    agent = subprocess.Popen(
        torchrun_sparsehead("pretrain", *DDP_RUN, "--run-dir", str(run_dir)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        workers = torchrun_workers(agent)
        deadline = time.monotonic() + 300
        while (logged := _logged_steps(run_dir)) < 2:
            assert agent.poll() is None and time.monotonic() < deadline, agent.communicate()[1][-3000:]
            time.sleep(0.02)
        for rank in ranks:
            os.kill(workers[rank], signal.SIGTERM)
        _, stderr = agent.communicate(timeout=300)
    finally:
        if agent.poll() is None:
            agent.kill()
    stops = re.findall(r"preempted: stopped by (SIGTERM|a signal to another rank) after step (\d+)", stderr)
    assert len(stops) == 2, stderr[-3000:]
    assert {s[1] for s in stops} == {str(step := int(stops[0][1]))}  # the same step on both ranks
    assert [s[0] == "SIGTERM" for s in stops].count(True) == len(ranks)
    saved = [int(checkpoint.PATTERN.search(p.name).group(1)) for p in checkpoint.list_checkpoints(run_dir)]
    assert saved == [step] and logged <= step < DDP_TOTAL_STEPS, (logged, saved)

    resumed = subprocess.run(
        torchrun_sparsehead("pretrain", "--resume", str(run_dir)), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(step {step})" in resumed.stderr
    assert_same_training_state(
        checkpoint.load(checkpoint.find(run_dir)), checkpoint.load(checkpoint.find(reference_ddp_run)), DDP_TOTAL_STEPS
    )


def test_a_new_start_removes_temporary_files_of_interrupted_writes(tmp_path):
    from sparsehead.training import resume

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    partial = [run_dir / ".config.yaml.k3j_x9a2.tmp", run_dir / "checkpoints" / ".ckpt-00000002.pt.ab12cd34.tmp"]
    kept = [run_dir / "notes.tmp", run_dir / ".hidden", run_dir / "config.yaml"]
    for path in partial + kept:
        path.write_text("x")
    assert resume.resume_point(run_dir, config.load(None, TINY)) is None  # a fresh run: no checkpoint
    assert not any(p.exists() for p in partial)
    assert all(p.exists() for p in kept)
