"""SLURM played on this machine, to run the sbatch files of scripts/slurm/ themselves.

`Job(script, workdir, ...)` starts the batch script as slurmd does: `bash SCRIPT ARGS` in the submit
folder (the #SBATCH lines are comments to bash) with SLURM's variables set, and stand-in `srun`,
`scancel`, `scontrol` and `squeue` (slurm_bin/) first on PATH, recording their calls. `preempt()`
then sends what SLURM sends from `--signal=B:SIG@N` on: SIG to the batch shell alone; SIGTERM to
every process of the job once the job asked to be requeued (`scontrol requeue` ends a running job)
or at the time limit; SIGKILL to those still alive after the grace time (SLURM's KillWait).
The processes of a job are those whose environment holds its SLURM_STANDIN_DIR, as a cgroup
holds them (torchrun starts its workers in sessions of their own).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import SRC

STANDINS = Path(__file__).resolve().parent / "slurm_bin"
GPUS_ON_NODE = 2  # torchrun starts this many workers a node: gloo processes on the CPU here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def directives(script: Path) -> dict[str, str]:
    """The script's `#SBATCH --name=value` (or `--flag`) options."""
    found = re.findall(r"^#SBATCH\s+--([\w-]+)(?:=(\S+))?", script.read_text(), flags=re.MULTILINE)
    return {name: value for name, value in found}


def _interpreter_dir(folder: Path) -> Path:
    """`python` and `torchrun` for the scripts: this test's interpreter (its torch, its packages)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, run in (("python", ""), ("torchrun", " -m torch.distributed.run")):
        (folder / name).write_text(f'#!/bin/sh\nexec "{sys.executable}"{run} "$@"\n')
        (folder / name).chmod(0o755)
    return folder


class Job:
    """One SLURM job of `script`, run (and requeued) in `workdir`; `env` adds to SLURM's variables."""

    def __init__(self, script: Path, workdir: Path, args: list[str], env: dict[str, str]):
        options = directives(script)
        batch_signal = re.fullmatch(r"B:(\w+)@\d+", options.get("signal", ""))
        if batch_signal is None or "requeue" not in options:
            raise ValueError(f"{script} lacks #SBATCH --requeue or --signal=B:SIG@SECONDS")
        self.script, self.workdir, self.args = script, workdir, args
        self.warning_signal = signal.Signals["SIG" + batch_signal.group(1)]
        self.state = workdir / f".slurm-{os.getpid()}-{id(self)}"
        self.state.mkdir(parents=True)
        self.job_id = str(4_000_000 + os.getpid() % 1_000_000)
        path = f"{STANDINS}{os.pathsep}{_interpreter_dir(self.state / 'bin')}{os.pathsep}{os.environ['PATH']}"
        self.env = {
            **os.environ,
            "PATH": path,
            "PYTHONPATH": str(SRC),
            "OMP_NUM_THREADS": "1",
            "SLURM_JOB_ID": self.job_id,
            "SLURM_JOBID": self.job_id,
            "SLURM_JOB_NAME": options["job-name"],
            "SLURM_JOB_NODELIST": "localhost",
            "SLURM_NNODES": "1",
            "SLURM_JOB_NUM_NODES": "1",
            "SLURM_GPUS_ON_NODE": str(GPUS_ON_NODE),
            "SLURM_SUBMIT_DIR": str(workdir),
            "SLURM_STANDIN_DIR": str(self.state),
            **env,
        }
        self.batch: subprocess.Popen | None = None
        self.starts = 0

    @property
    def run_dir(self) -> Path:
        return self.workdir / "runs" / self.env["SLURM_JOB_NAME"]

    @property
    def output(self) -> Path:
        """The latest start's stdout and stderr (slurm-JOBID.out; one file a start here)."""
        return self.workdir / f"slurm-{self.job_id}.{self.starts}.out"

    def start(self) -> None:
        """Run the batch script; a second start is the requeued job (SLURM_RESTART_COUNT=1)."""
        self.starts += 1
        env = {**self.env, "SLURM_RESTART_COUNT": str(self.starts - 1)}
        with self.output.open("w") as out:
            self.batch = subprocess.Popen(
                ["bash", str(self.script), *self.args],
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def calls(self) -> list[str]:
        """The stand-ins' calls so far, in order, over every start."""
        path = self.state / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def processes(self) -> list[int]:
        """The live processes of this job (zombies left out)."""
        marker = f"SLURM_STANDIN_DIR={self.state}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                    if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                        found.append(int(proc.name))
            except OSError:  # gone meanwhile, or another user's
                continue
        return found

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _ended(self) -> bool:
        # The batch shell first: a process just forked has not yet the job's environment.
        return self.batch.poll() is not None and not self.processes()

    def preempt(self, time_limit_s: float = 60, grace_s: float = 30) -> list[str]:
        """SLURM's signals from --signal=B:SIG@N on (N = time_limit_s here); what happened, in order."""
        self.batch.send_signal(self.warning_signal)
        events = [f"{self.warning_signal.name} to the batch shell"]
        deadline = time.monotonic() + time_limit_s
        while not self._ended() and f"scontrol requeue {self.job_id}" not in self.calls():
            if time.monotonic() > deadline:
                events.append("time limit")
                break
            time.sleep(0.05)
        else:
            events.append("requeued" if f"scontrol requeue {self.job_id}" in self.calls() else "ended")
        self._signal_all(signal.SIGTERM)
        events.append("SIGTERM to the job")
        deadline = time.monotonic() + grace_s
        while not self._ended() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self._ended():
            self._signal_all(signal.SIGKILL)
            events.append("SIGKILL to the job")
        self.batch.wait(timeout=60)
        return events

    def wait(self, timeout: float = 600) -> int:
        """The batch script's exit status once every process of the job ended (SIGKILL past `timeout`)."""
        deadline = time.monotonic() + timeout
        while not self._ended() and time.monotonic() < deadline:
            time.sleep(0.1)
        self._signal_all(signal.SIGKILL)
        return self.batch.wait(timeout=60)
