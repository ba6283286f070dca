"""Metrics of a run: one JSON object per line in metrics.jsonl, mirrored to TensorBoard if installed."""
from __future__ import annotations

import json
from pathlib import Path

from .io import atomic_write_text
from .rundir import RunDir


class MetricLogger:
    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True, start_step: int = 0):
        """start_step: the step a run (re)starts from; records logged after it by an interrupted
        earlier attempt are dropped, so a resumed run's metrics read as one unbroken run."""
        self.enabled = enabled
        self.path = RunDir(run_dir).metrics_path
        self.writer = None
        if enabled and self.path.is_file():
            kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= start_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(RunDir(run_dir).tensorboard_dir), purge_step=start_step + 1)
            except ImportError:  # the optional extra is not installed
                self.writer = None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:  # a line at a time: a killed run loses at most one line
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a torn last line from a killed run is ignored)."""
    path = RunDir(run_dir).metrics_path
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
