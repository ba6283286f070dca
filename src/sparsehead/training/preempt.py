"""Pre-emption: a stop signal (core/signals.py) ends a run with a checkpoint and exit status 75.

StopOnSignal, a step hook, catches train.preempt_signals from setup to teardown. At each step
boundary every rank takes part in one all-reduce (MAX) of its "a signal arrived" flag
(core.signals.StopFlag), so all ranks stop after the same step even when the signal reached only
some of them; the run then writes one checkpoint through its usual save path (resume is exact) and
raises PreemptedError, which `sparsehead pretrain` turns into exit status 75
(core.errors.EXIT_INTERRUPTED). With train.on_preempt=requeue, rank 0 first asks SLURM to requeue the job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from sparsehead.config import TrainConfig
from sparsehead.core import distributed as dist
from sparsehead.core.errors import Interrupted
from sparsehead.core.signals import StopFlag, StopSignals
from sparsehead.core.step_hook import StepHook

REQUEUE_TIMEOUT = 30  # seconds: the job's grace time after SIGTERM is short (SLURM's KillWait, 30 s by default)


class PreemptedError(Interrupted):
    """The run stopped on a signal after writing a checkpoint; `pretrain --resume RUN` continues it."""

    def __init__(self, run_dir: Path, step: int, signal_name: str, requeued: bool = False):
        self.run_dir, self.step, self.signal_name, self.requeued = Path(run_dir), step, signal_name, requeued
        then = "the job was requeued" if requeued else f"continue with: sparsehead pretrain --resume {run_dir}"
        super().__init__(f"stopped by {signal_name} after step {step} with a checkpoint; {then}")


def requeue() -> bool:
    """`scontrol requeue $SLURM_JOB_ID` when running under SLURM; True when it succeeded."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        print("train.on_preempt=requeue: SLURM_JOB_ID is not set (not a SLURM job); not requeued", file=sys.stderr)
        return False
    if shutil.which("scontrol") is None:
        print("train.on_preempt=requeue: scontrol is not on PATH; not requeued", file=sys.stderr)
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=REQUEUE_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(
            f"train.on_preempt=requeue: scontrol requeue {job} gave no answer in {REQUEUE_TIMEOUT} s; not requeued",
            file=sys.stderr,
        )
        return False
    if done.returncode != 0:
        print(f"train.on_preempt=requeue: scontrol requeue {job} failed: {done.stderr.strip()}", file=sys.stderr)
        return False
    print(f"requeued SLURM job {job}", file=sys.stderr)
    return True


class StopOnSignal(StepHook):
    """The stop signals as a step hook, from setup (`open()`) to teardown (`close()`): a signal before the
    last step stops the run at the next step boundary; one during the last checkpoint ends the command
    after it; one during the final evaluation ends it at once (the checkpoint of the last step is saved,
    so the resumed run only evaluates)."""

    def __init__(self, train: TrainConfig, run_dir: Path):
        self.signals, self.on_preempt, self.run_dir = StopSignals(train.preempt_signals), train.on_preempt, run_dir
        self.flag: Optional[StopFlag] = None
        self.reason: Optional[str] = None

    def open(self) -> None:
        self.signals.__enter__()

    def close(self) -> None:
        self.signals.__exit__(None, None, None)

    def stop_reason(self, step: int) -> Optional[str]:
        if self.flag is None:
            self.flag = StopFlag()  # at the first step boundary, by every rank at once (under NCCL a gloo group)
        if self.flag.any_rank(self.signals.requested):  # a collective: all ranks stop after this step
            self.reason = self.signals.requested or "a signal to another rank"
        return self.reason

    def at_end(self, step: int, finished: bool) -> None:
        if reason := self.stop_reason(step):  # one more agreement: a signal during the last checkpoint
            raise self.preempted(step, reason)

        def stop_now(name: str) -> None:
            raise self.preempted(step, name)

        self.signals.act = stop_now

    def preempted(self, step: int, reason: str) -> PreemptedError:
        requeued = self.on_preempt == "requeue" and dist.is_main() and requeue()
        return PreemptedError(self.run_dir, step, reason, requeued)
