"""The SLURM recipes scripts/slurm/*.sbatch, run as SLURM runs them (slurm_job.py plays SLURM), and
torchrun without SLURM: SLURM's warning signal (or the scheduler's SIGTERM to torchrun) leaves one
checkpoint at the step it arrived, the job is requeued once, and the requeued job (the same script,
or the same torchrun command) ends bitwise equal to an unbroken run. Two gloo processes on the CPU
stand for a node's GPUs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from slurm_job import GPUS_ON_NODE, Job, free_port

from conftest import REPO, SRC, TINY, assert_same_training_state, run_cli
from ddp_harness import torchrun_sparsehead
from sparsehead import config
from sparsehead.runs import checkpoint

SLURM_DIR = REPO / "scripts" / "slurm"
# BYOL, 4 steps an epoch over 10 epochs (train.epochs comes as the script's argument, as a user's
# override would); no periodic checkpoint, so the pre-emption's is the only one before the end.
BASE = TINY + [
    "data.subset=256",
    "data.storage=memory",
    "train.threads=1",
    "train.checkpoint_every=0",
    "method.name=byol",
    "method.predictor_hidden_dim=32",
]
ARGS = ["train.epochs=10"]
TOTAL_STEPS = 40
ENV = {"OMP_NUM_THREADS": "1"}
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds a job's processes in /proc"),
]


def _logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return sum(1 for line in path.read_text().splitlines() if "loss" in json.loads(line)) if path.exists() else 0


def _wait_for_steps(run_dir: Path, steps: int, alive) -> int:
    deadline = time.monotonic() + 300
    while (logged := _logged_steps(run_dir)) < steps:
        assert alive() and time.monotonic() < deadline, f"the run logged {logged} steps and stopped or hung"
        time.sleep(0.02)
    return logged


def _saved_steps(run_dir: Path) -> list[int]:
    return [int(checkpoint.PATTERN.search(p.name).group(1)) for p in checkpoint.list_checkpoints(run_dir)]


def _assert_ends_like(run_dir: Path, reference: Path) -> None:
    assert_same_training_state(
        checkpoint.load(checkpoint.find(run_dir)), checkpoint.load(checkpoint.find(reference)), TOTAL_STEPS
    )


@pytest.fixture(scope="module")
def reference_one_process(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = run_cli("pretrain", *BASE, *ARGS, "--run-dir", str(run_dir), env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="module")
def reference_two_processes(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference_ddp") / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), **ENV}
    cmd = torchrun_sparsehead("pretrain", *BASE, *ARGS, "--run-dir", str(run_dir))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, reference", [("one_node", "reference_one_process"), ("multi_node", "reference_two_processes")]
)
def test_sbatch_file_checkpoints_requeues_once_and_the_requeued_job_resumes_bitwise(
    script, reference, request, tmp_path
):
    config_file = tmp_path / "tiny.yaml"
    config.save(config.load(None, BASE), config_file)
    env = {"SPARSEHEAD_CONFIG": str(config_file), "SPARSEHEAD_RDZV_PORT": str(free_port())}
    job = Job(SLURM_DIR / f"{script}.sbatch", tmp_path, ARGS, env)

    job.start()
    logged = _wait_for_steps(job.run_dir, 3, alive=lambda: job.batch.poll() is None)
    events = job.preempt()
    log = job.output.read_text()
    # The job asked to be requeued before the time limit, so its checkpoint is the warning signal's.
    assert events[:2] == ["SIGUSR1 to the batch shell", "requeued"], (events, log[-3000:])
    saved = _saved_steps(job.run_dir)
    assert len(saved) == 1 and logged <= saved[0] <= logged + 2 and saved[0] < TOTAL_STEPS, (logged, saved)

    job.start()  # SLURM starts the requeued job: the same script, the same arguments
    assert job.wait() == 0, job.output.read_text()[-3000:]
    assert f"(step {saved[0]})" in job.output.read_text()
    # One requeue; multi_node.sbatch forwarded the signal to its step once, in the first start only.
    multi = script == "multi_node"
    step = ["scontrol show", "srun --kill-on-bad-exit=0"] if multi else []
    expected = [*step, *(["scancel --signal=USR1"] if multi else []), "scontrol requeue", *step]
    assert [" ".join(c.split()[:2]) for c in job.calls()] == expected, job.calls()
    assert f"scontrol requeue {job.job_id}" in job.calls()
    assert not multi or f"scancel --signal=USR1 {job.job_id}.0" in job.calls()
    _assert_ends_like(job.run_dir, request.getfixturevalue(reference))


def _multi_node_signals_flag() -> str:
    """The --signals-to-handle option exactly as multi_node.sbatch passes it to torchrun."""
    return re.search(r"--signals-to-handle=\S+", (SLURM_DIR / "multi_node.sbatch").read_text()).group(0)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=lambda s: s.name)
def test_signal_to_the_torchrun_agent_checkpoints_and_the_same_command_resumes_bitwise(
    sig, reference_two_processes, tmp_path
):
    """SIGTERM (a scheduler's, torchrun's defaults) or SIGUSR1 (with multi_node.sbatch's
    --signals-to-handle) to torchrun alone: it forwards the signal, both workers stop after the step
    it arrived in with one checkpoint, and the same command run again ends like an unbroken run."""
    run_dir = tmp_path / "run"
    flags = (_multi_node_signals_flag(),) if sig == signal.SIGUSR1 else ()
    cmd = torchrun_sparsehead("pretrain", *BASE, *ARGS, "--run-dir", str(run_dir), flags=flags)
    env = {**os.environ, "PYTHONPATH": str(SRC), **ENV}
    with (tmp_path / "first.log").open("w") as out:
        agent = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            logged = _wait_for_steps(run_dir, 3, alive=lambda: agent.poll() is None)
            agent.send_signal(sig)
            agent.wait(timeout=300)
        finally:
            if agent.poll() is None:
                agent.kill()
    log = (tmp_path / "first.log").read_text()
    stops = re.findall(rf"stopped by {sig.name} after step (\d+)", log)
    assert len(stops) == GPUS_ON_NODE and len(set(stops)) == 1, log[-3000:]
    saved = _saved_steps(run_dir)
    assert saved == [int(stops[0])] and logged <= saved[0] <= logged + 2 < TOTAL_STEPS, (logged, saved)

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(step {saved[0]})" in resumed.stderr
    _assert_ends_like(run_dir, reference_two_processes)
