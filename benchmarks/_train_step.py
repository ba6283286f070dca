"""sparsehead's own training step, end to end, as `sparsehead pretrain` runs it: training.setup builds the run
(the in-memory feed on the device, the views, fused Adam, the hooks: non-finite guard, collapse monitor) and
training.step.train_step takes each batch. Timed over a block of steps with one synchronisation at each end,
as training runs (a step that does not log reads nothing back, so the host may run ahead of the GPU).

A variant is a list of config overrides (the speed options): `eager` the config as it is, `compile`
train.compile, `graphs` train.compile with train.cuda_graphs."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import torch

from sparsehead import config
from sparsehead.training.setup import setup
from sparsehead.training.step import train_step

VARIANTS = {"eager": [], "compile": ["train.compile=true"], "graphs": ["train.compile=true", "train.cuda_graphs=true"]}


def parse_variants(text: str) -> list[str]:
    names = [v for v in text.split(",") if v]
    if not names or set(names) - set(VARIANTS):
        raise ValueError(f"{text!r}: give a comma-separated subset of {','.join(VARIANTS)}")
    return names


def give_an_evaluation_split(root: Path) -> None:
    """A run checks its evaluation split before step 1: a benchmark's training-only folder lends its own
    (the timed steps end long before any evaluation)."""
    if not (root / "test").exists():
        (root / "test").symlink_to(root / "train")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_rate(config_name: str, overrides: list[str], steps: int, warmup: int) -> dict:
    """Images/s of `steps` steps of the run the shipped config and `overrides` describe (after `warmup` steps:
    compilation, cuDNN's autotuning, the first graphs), in a temporary run folder."""
    cfg = config.load(config_name, [*overrides, f"train.max_steps={warmup + steps}", "train.progress=false"])
    with tempfile.TemporaryDirectory(prefix="sparsehead-bench-run-") as run_dir, warnings.catch_warnings(record=True):
        warnings.simplefilter("always")  # a variant's fallback warning (no CUDA graphs on a CPU) is its result
        run = setup(cfg, Path(run_dir) / "run")
        with run:
            model = type(run.model).__name__  # GraphedModel where CUDA graphs replay, OptimizedModule where compiled
            batches = run.batches()
            for _ in range(warmup):
                train_step(run, *next(batches))
            synchronize(run.device)
            t0 = time.perf_counter()
            for _ in range(steps):
                train_step(run, *next(batches))
            synchronize(run.device)
            seconds = time.perf_counter() - t0
    return {"img_per_s": cfg.train.batch_size * steps / seconds, "step_s": seconds / steps, "model": model}


def train_step_rates(config_name: str, base: list[str], variants: list[str], steps: int, warmup: int) -> dict:
    """{variant: train_step_rate} for each variant, each in a fresh run; a variant that fails says why."""
    out = {}
    for name in variants:
        try:
            out[name] = train_step_rate(config_name, [*base, *VARIANTS[name]], steps, warmup)
        except Exception as err:  # a benchmark reports a variant that cannot run, and goes on with the others
            out[name] = {"failed": f"{type(err).__name__}: {err}"[:500]}
    return out
