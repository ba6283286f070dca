"""RunDir: the one owner of a run folder's layout and of every record in it.

    RUN/
      run.json            {"schema": SCHEMA, "sparsehead": version}; absent in folders of schema 1
      config.yaml         the resolved config (config.to_dict)
      metrics.jsonl       one JSON object per logged step (metrics_log.MetricLogger)
      metrics.csv         the same records as CSV, every key a column (train.loggers: csv)
      tensorboard/        the same scalars as TensorBoard events (train.loggers: tensorboard)
      wandb/              wandb's files (train.loggers: wandb; unless WANDB_DIR is set) and its run id
      environment.json    per (re)start: git commit, python/torch/CUDA versions, device, host
      checkpoints/        ckpt-<step>.pt (checkpoint.py); each holds "schema" too
      results.json        end of pretraining: run_dir, steps, knn<k>_top1, knn200_weighted_top1
      eval/<name>.json    one record per `sparsehead evaluate` (runner.result_name)
      features/, splits/  caches of evaluate (frozen features, semi-supervised label subsets)
      analysis/           analysis.json, figures and report.html of `sparsehead analyze`
      previous-<time>/    the history of an earlier run, set aside by `pretrain --resume --force`
                          when none of its checkpoints loads (set_history_aside)
      .lock               held (flock) by the process writing the run (runs/lock.py)

Readers go through this class, so a renamed or missing field is an error naming the file and
what to do, never an empty table cell. Folders of an older schema are read (and migrated) where
their layout allows, and refused with the fix where it does not.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from sparsehead import __version__, config
from sparsehead.config.parsing import describe_yaml_error
from sparsehead.core.atomic import atomic_write_json
from sparsehead.core.errors import SparseheadError

SCHEMA = 2  # 1: before run.json (flat method section); 2: per-method parameters, run.json
PREVIOUS = "previous-"  # the prefix of a folder of history set aside
LOCK_NAME = ".lock"
CONFIG_FIX = (
    "restore it from a copy; every checkpoint of the run holds the same config (its 'config' entry: "
    "torch.load(ckpt, weights_only=True)['config'])"
)


def one_line(err: Exception, limit: int = 200) -> str:
    """An exception's message on one line (a YAML error spans several), at most `limit` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RunDirError(SparseheadError, ValueError):
    """A run folder that cannot be read as asked, and what to do."""


def _inside(name: str) -> property:
    return property(lambda self: self.path / name, doc=f"RUN/{name}")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- layout: every name of the folder, in one place ------------------------------------------
    run_file = _inside("run.json")
    config_path = _inside("config.yaml")
    metrics_path = _inside("metrics.jsonl")
    metrics_csv_path = _inside("metrics.csv")
    tensorboard_dir = _inside("tensorboard")
    wandb_dir = _inside("wandb")
    environment_path = _inside("environment.json")
    checkpoints_dir = _inside("checkpoints")
    results_path = _inside("results.json")
    eval_dir = _inside("eval")
    features_dir = _inside("features")
    splits_dir = _inside("splits")
    analysis_dir = _inside("analysis")
    lock_path = _inside(LOCK_NAME)

    @classmethod
    def of_checkpoint(cls, path: str | Path) -> "RunDir":
        """The run folder a checkpoint file belongs to (its folder, for a loose checkpoint file)."""
        path = Path(path)
        return cls(path.parent.parent if path.parent.name == "checkpoints" else path.parent)

    def split_path(self, data_key: str, fraction: float, seed: int) -> Path:
        return self.splits_dir / f"semisup-{fraction * 100:g}pct-seed{seed}-{data_key}.json"

    def eval_path(self, name: str) -> Path:
        return self.eval_dir / f"{name}.json"

    # --- schema -----------------------------------------------------------------------------------
    @property
    def schema(self) -> int:
        """The folder's schema: run.json's, or 1 for folders written before run.json existed."""
        if not self.run_file.is_file():
            return 1
        fix = (
            f'if this sparsehead made the run, write it again as {{"schema": {SCHEMA}, "sparsehead": "{__version__}"}}'
        )
        schema = self._json(self.run_file, fix).get("schema")
        if not isinstance(schema, int):
            raise RunDirError(f"{self.run_file} has no integer 'schema'; it was not written by sparsehead")
        if schema > SCHEMA:
            raise RunDirError(
                f"{self.path} has run-folder schema {schema}, newer than this sparsehead's "
                f"({SCHEMA}); read it with the sparsehead version that wrote it (run.json names it)"
            )
        return schema

    def write_run_file(self) -> None:
        atomic_write_json(self.run_file, {"schema": SCHEMA, "sparsehead": __version__})

    # --- config -----------------------------------------------------------------------------------
    def is_run(self) -> bool:
        return self.config_path.is_file()

    def require_run(self) -> None:
        """The one "not a run folder" error, for every command given a folder to read a run from."""
        if not self.is_run():
            raise RunDirError(
                f"{self.path} is not a run folder (it has no config.yaml); give a folder "
                "made by `sparsehead pretrain` (it holds config.yaml and checkpoints/)"
            )

    def read_config_dict(self) -> dict:
        self.require_run()
        path = self.config_path
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except (OSError, ValueError) as err:  # unreadable, not text
            raise RunDirError(f"{path} cannot be read ({one_line(err)}); {CONFIG_FIX}") from None
        except yaml.YAMLError as err:
            raise RunDirError(f"{path} is not valid YAML ({describe_yaml_error(err)}); {CONFIG_FIX}") from None
        if not isinstance(values, dict):
            raise RunDirError(f"{path} is not a mapping of config sections; {CONFIG_FIX}")
        return values

    def read_config(self) -> config.Config:
        """The run's config in today's layout (migrated from older schemas)."""
        return config.from_saved(self.read_config_dict(), self.schema)

    def write_config(self, cfg: config.Config) -> None:
        self.write_run_file()
        config.save(cfg, self.config_path)

    # --- records ------------------------------------------------------------------------------------
    @staticmethod
    def _json(path: Path, fix: str = "delete it and write it again with the command that makes it") -> dict:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:  # unreadable, not text, not JSON
            raise RunDirError(f"{path} cannot be read as JSON ({one_line(err)}); {fix}") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{path} holds a {type(data).__name__}, not a JSON object; {fix}")
        return data

    def read_attempts(self) -> list:
        """environment.json's list of the environments of every (re)start; [] before the first."""
        path = self.environment_path
        if not path.is_file():
            return []
        fix = f"move it aside (mv {path} {path}.damaged: it records where the earlier attempts ran) and run again"
        attempts = self._json(path, fix).get("attempts", [])
        if not isinstance(attempts, list):
            raise RunDirError(f"{path}: 'attempts' is not a list; {fix}")
        return attempts

    def write_environment(self, environment: dict) -> None:
        """Append this (re)start's environment to environment.json's list of attempts."""
        atomic_write_json(self.environment_path, {"attempts": [*self.read_attempts(), environment]})

    # --- history --------------------------------------------------------------------------------------
    def set_history_aside(self) -> Path:
        """Move every record of the run (checkpoints, metrics, results, evaluations, ...) into
        previous-<UTC time>/, so that a run started afresh in this folder overwrites nothing; the
        config, run.json and the lock stay. Returns the folder they went to."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        aside = self.path / f"{PREVIOUS}{stamp}"
        n = 1
        while aside.exists():  # a second reset within the same second
            aside, n = self.path / f"{PREVIOUS}{stamp}-{n}", n + 1
        stays = {self.config_path.name, self.run_file.name, LOCK_NAME}
        try:
            aside.mkdir()
            for entry in sorted(self.path.iterdir()):
                if entry != aside and entry.name not in stays and not entry.name.startswith(PREVIOUS):
                    os.replace(entry, aside / entry.name)
        except OSError as err:
            raise RunDirError(
                f"cannot move the history of {self.path} into {aside} ({err.strerror or err}); make the folder "
                "writable and run again (what was moved already is in that folder)"
            ) from None
        return aside

    # --- results, evaluation records, analysis ------------------------------------------------------
    def write_results(self, summary: dict) -> None:
        atomic_write_json(self.results_path, summary)

    def read_results(self) -> Optional["Record"]:
        """results.json (None before pretraining finished)."""
        return self._record(
            self.results_path, f"finish or resume the pretraining (`sparsehead pretrain --resume {self.path}`)"
        )

    def write_eval(self, name: str, record: dict) -> Path:
        path = self.eval_path(name)
        atomic_write_json(path, record)
        return path

    def read_eval(self, name: str) -> Optional["Record"]:
        """eval/<name>.json (None when that evaluation has not been run)."""
        protocol = name.split("-")[0].split("@")[0]
        return self._record(
            self.eval_path(name), f"run `sparsehead evaluate {self.path} --protocol {protocol}` again to rewrite it"
        )

    def read_analysis(self, folder: Optional[Path] = None) -> Optional["Record"]:
        """analysis/analysis.json (or that of `folder`); None when not analysed."""
        path = Path(folder or self.analysis_dir) / "analysis.json"
        return self._record(path, f"run `sparsehead analyze {self.path}` again to rewrite it")

    def _record(self, path: Path, fix: str) -> Optional["Record"]:
        return Record(path, self._json(path), fix) if path.is_file() else None


class Record(dict):
    """One JSON record of a run folder; `record.field("r", "top1")` is its value, or a RunDirError
    naming the file, the missing field and the fix (never a silent blank)."""

    def __init__(self, path: Path, data: dict, fix: str):
        super().__init__(data)
        self.path, self.fix = Path(path), fix

    def field(self, *keys: str) -> Any:
        value: Any = self
        for i, key in enumerate(keys):
            if not isinstance(value, dict) or key not in value:
                raise RunDirError(
                    f"{self.path} has no field {'.'.join(keys[: i + 1])} (written by another "
                    f"sparsehead version?); {self.fix}"
                )
            value = value[key]
        return value

    def number(self, *keys: str) -> float:
        value = self.field(*keys)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RunDirError(f"{self.path}: field {'.'.join(keys)} is {value!r}, not a number; {self.fix}")
        return float(value)
