"""Metrics of a run: one JSON object per line in metrics.jsonl (always), mirrored to the trackers
named in train.loggers: tensorboard, csv (metrics.csv), wandb.

metrics.jsonl is the record every reader uses, so its failure (a full disk: core.atomic.WriteError)
stops the run; a mirror that fails is switched off with a warning naming it, and training goes on."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import secrets
import sys
import warnings
from pathlib import Path
from typing import Optional

from sparsehead.core.atomic import append_text, atomic_write, atomic_write_text
from sparsehead.core.errors import ConfigError
from sparsehead.runs.folder import RunDir


def check_loggers(loggers) -> None:
    """Before any work: wandb, when asked for, is installed (tensorboard is in the default list, so
    its absence is a note at the run's start, not an error: see MetricLogger)."""
    if "wandb" in loggers:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(
                "train.loggers: wandb is not installed; pip install 'sparsehead[wandb]' "
                "or drop wandb from train.loggers"
            ) from None


class TensorBoardSink:
    def __init__(self, run_dir: RunDir, start_step: int, run_info: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir.tensorboard_dir), purge_step=start_step + 1)
        for key, value in run_info.items():  # config and environment, as text panels
            self.writer.add_text(key, "```\n" + json.dumps(value, indent=2, default=str) + "\n```", start_step)

    def log(self, record: dict) -> None:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.writer.close()


class CsvSink:
    """metrics.csv: one row per record under a header of every key seen so far (step first). A key that
    first appears later rewrites the file atomically with the wider header, so a reader never sees a
    row longer than the header, nor half a file."""

    def __init__(self, run_dir: RunDir, start_step: int, run_info: dict):
        self.path = run_dir.metrics_csv_path
        self.rows = read_metrics(run_dir.path)  # metrics.jsonl, already cut back to start_step
        self.columns = ["step"]
        for row in self.rows:
            self._widen(row)
        self._rewrite()

    def _widen(self, record: dict) -> bool:
        new = [k for k in record if k not in self.columns]
        self.columns += new
        return bool(new)

    def _text(self, rows, header: bool) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()

    def _rewrite(self) -> None:
        atomic_write_text(self.path, self._text(self.rows, header=True))

    def log(self, record: dict) -> None:
        self.rows.append(record)
        if self._widen(record):
            self._rewrite()
        else:
            append_text(self.path, self._text([record], header=False))  # a killed run loses at most that row

    def close(self) -> None:
        pass


class WandbSink:
    """A wandb run (offline with WANDB_MODE=offline); its files go to WANDB_DIR or else RUN/wandb. The run
    id is kept in the run folder, so a resumed run continues the same wandb run."""

    def __init__(self, run_dir: RunDir, start_step: int, run_info: dict, project: str = "sparsehead"):
        import wandb

        id_file = run_dir.wandb_dir / "run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        atomic_write_text(id_file, run_id + "\n")
        self.run = wandb.init(
            project=project,
            name=run_dir.path.name,
            id=run_id,
            resume="allow",
            dir=os.environ.get("WANDB_DIR") or str(run_dir.wandb_dir),
            config=run_info,
            settings=wandb.Settings(disable_git=True, console="off", silent=True),
        )

    def log(self, record: dict) -> None:
        self.run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def close(self) -> None:
        self.run.finish()


class MetricLogger:
    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool = True,
        loggers=("jsonl", "tensorboard"),
        start_step: int = 0,
        run_info: Optional[dict] = None,
        wandb_project: str = "sparsehead",
    ):
        """start_step: the step a run (re)starts from; records logged after it by an interrupted
        earlier attempt are dropped, so a resumed run's metrics read as one unbroken run.
        run_info: what the trackers that take it record once (the resolved config, the environment)."""
        self.enabled = enabled
        run = RunDir(run_dir)
        self.path = run.metrics_path
        self.sinks: dict = {}
        if not enabled:
            return
        if self.path.is_file():
            _cut_back(self.path, start_step)
        check_loggers(loggers)
        makers = {
            "tensorboard": TensorBoardSink,
            "csv": CsvSink,
            "wandb": lambda *a: WandbSink(*a, project=wandb_project),
        }
        for name in dict.fromkeys(loggers):  # in order, once each
            if name == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
                print(
                    "note: tensorboard is not installed, so no TensorBoard events are written "
                    "(pip install 'sparsehead[tensorboard]')",
                    file=sys.stderr,
                )
            elif name in makers:
                self.sinks[name] = makers[name](run, start_step, run_info or {})

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        append_text(self.path, json.dumps(record) + "\n")  # a line at a time: a killed run loses at most one line
        for name, sink in list(self.sinks.items()):
            try:
                sink.log(record)
            except Exception as err:  # a tracker's failure must not end the run, nor pass unnoticed
                del self.sinks[name]
                warnings.warn(
                    f"train.loggers: {name} failed at step {record.get('step')} ({err!r}); it is "
                    f"switched off for the rest of the run, {self.path.name} keeps every record"
                )

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()


def _record(line: bytes) -> Optional[dict]:
    """The record on one line of metrics.jsonl; None for a torn or damaged line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _cut_back(path: Path, start_step: int) -> None:
    """Drop the records logged after `start_step` (by an interrupted attempt) and end a torn last line;
    every other line stays byte for byte, a damaged one too (readers skip it), so nothing else is lost."""
    lines = path.read_bytes().splitlines(keepends=True)
    kept = [
        line if line.endswith(b"\n") else line + b"\n"
        for line in lines
        if not ((r := _record(line)) and isinstance(r.get("step"), (int, float)) and r["step"] > start_step)
    ]
    if kept != lines:
        data = b"".join(kept)
        atomic_write(path, lambda f: f.write(data), needed=len(data))


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a torn last line from a killed run, or a damaged one, is skipped)."""
    path = RunDir(run_dir).metrics_path
    if not path.is_file():
        return []
    return [r for line in path.read_bytes().splitlines() if (r := _record(line)) is not None]
