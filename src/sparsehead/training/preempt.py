"""Pre-emption: what the training loop does when a stop signal (core/signals.py) arrived.

At each step boundary every rank takes part in one all-reduce (MAX) of its "a signal arrived"
flag (core.signals.StopFlag), so all ranks stop after the same step even when the signal reached only some of them; the
loop then writes one checkpoint through its usual save path (resume is exact) and raises
PreemptedError, which `sparsehead pretrain` turns into exit status 75 (core.errors.EXIT_INTERRUPTED). With
train.on_preempt=requeue, rank 0 first asks SLURM to requeue the job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sparsehead.core.errors import Interrupted


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
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"train.on_preempt=requeue: scontrol requeue {job} failed: {done.stderr.strip()}", file=sys.stderr)
        return False
    print(f"requeued SLURM job {job}", file=sys.stderr)
    return True
