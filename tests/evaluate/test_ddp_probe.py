"""The SGD linear probe under torchrun (2 gloo processes): it learns, the first process alone writes
the record, and a run stopped by SIGTERM to one process continues, under torchrun again, to
exactly the unbroken 2-process result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SRC, TINY
from ddp_harness import torchrun_sparsehead, torchrun_workers
from sparsehead import config
from sparsehead.training.loop import pretrain

ENV = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
PROBE = [
    "--protocol",
    "linear",
    "--linear-recipe",
    "sgd-augment",
    "--epochs",
    "4",
    "--batch-size",
    "128",
    "--lr-head",
    "0.5",
]


def _torchrun_evaluate(run: Path) -> list[str]:
    return torchrun_sparsehead("evaluate", str(run), *PROBE, "--device", "cpu")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers through /proc")
def test_sgd_probe_under_torchrun_learns_and_resumes_exactly(tmp_path):
    cfg = config.load(None, TINY + [f"train.out_dir={tmp_path}", "train.run_name=a", "train.max_steps=2"])
    run = Path(pretrain(cfg)["run_dir"])
    record = run / "eval" / "linear-sgd-augment.json"

    unbroken = subprocess.run(_torchrun_evaluate(run), env=ENV, capture_output=True, text=True)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    assert unbroken.stdout.count("written:") == 1  # one record, by the first process
    reference = json.loads(record.read_text())
    # Above chance (0.1) by over 3 standard deviations of a guess on the 360 test images (one process: 0.225).
    assert reference["r"]["top1"] > 0.15
    record.unlink()

    agent = subprocess.Popen(
        _torchrun_evaluate(run), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        workers = torchrun_workers(agent)
        progress, deadline = run / "eval" / "progress", time.monotonic() + 300
        while not (progress.is_dir() and any(progress.iterdir())):  # the first epoch ended
            assert agent.poll() is None and time.monotonic() < deadline, agent.communicate()[1][-3000:]
            time.sleep(0.02)
        os.kill(workers[1], signal.SIGTERM)
        _, stderr = agent.communicate(timeout=300)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert "stopped by SIGTERM" in stderr and "stopped by a signal to another process" in stderr, stderr[-3000:]
    assert not record.exists()

    continued = subprocess.run(_torchrun_evaluate(run), env=ENV, capture_output=True, text=True)
    assert continued.returncode == 0 and "continuing from" in continued.stderr, continued.stderr[-3000:]
    assert json.loads(record.read_text())["r"] == reference["r"]
