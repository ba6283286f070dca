"""Resuming a run exactly where it stopped.

Besides weights, optimiser and schedules, a checkpoint holds the random states of every process
(torch CPU and CUDA, numpy, Python, the augmentation generator) and the position in the data
order, so a resumed run draws the same batches and views as one that was never stopped. A run
folder is resumed only with the config it was made with: the keys in RESUME_MAY_DIFFER may
change, any other change is refused unless forced.
"""

from __future__ import annotations

import random
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from sparsehead import config
from sparsehead.core import distributed as dist
from sparsehead.runs import checkpoint
from sparsehead.runs.checkpoint import CheckpointError
from sparsehead.runs.folder import PREVIOUS, SCHEMA, RunDir, RunDirError

# Keys that do not change what a run computes (or only where it runs); resuming may change them.
RESUME_MAY_DIFFER = {
    "train.progress": "the progress bar",
    "train.log_every": "how often metrics are written",
    "train.loggers": "where metrics are mirrored",
    "train.wandb_project": "the wandb project",
    "train.checkpoint_every": "how often checkpoints are written",
    "train.keep_checkpoints": "how many checkpoints are kept",
    "train.max_steps": "where the run stops (the schedules span train.epochs either way)",
    "train.device": "the device (cuda:0 or cuda:1, auto or cuda); moving between cpu and cuda restarts "
    "the augmentation random stream, so views then differ from an unbroken run",
    "train.threads": "CPU threads (a different count can change float rounding on the CPU)",
    "train.out_dir": "where the run folder lives (it may be moved)",
    "train.run_name": "the run folder's name (it may be renamed)",
    "train.preempt_signals": "which signals stop the run with a checkpoint",
    "train.on_preempt": "what follows a pre-emption checkpoint",
    "train.channels_last": "the memory layout (float rounding may differ)",
    "train.compile": "whether the model is compiled (float rounding may differ)",
    "augment.compile": "whether the views' colour chain is compiled (float rounding may differ)",
    "train.cuda_graphs": "whether the compiled model replays as CUDA graphs (float rounding may differ)",
    "train.collapse_spectra": "where the collapse monitor's spectra are computed (on a thread, a logging step later)",
    "train.nonfinite": "what a NaN/Inf step does",
    "train.nonfinite_max_skips": "how many consecutive NaN/Inf steps are skipped",
    "data.cache_dir": "where decoded imagefolder data is cached",
    "data.download": "whether torchvision may download missing data",
    "data.workers": "DataLoader worker processes of data.storage=stream (crops depend on seed, epoch and index only)",
    "eval.knn_batch_size": "the memory use of the final k-NN",
}


# --- random states ------------------------------------------------------------------------------


def capture_rng(augment_rng: torch.Generator) -> dict:
    """This process's random states as tensors and plain values (loadable with weights_only=True)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "augment": augment_rng.get_state(),
        "augment_device": augment_rng.device.type,
    }
    if augment_rng.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(augment_rng.device)
    return state


def gather_rng(local: dict) -> list[dict]:
    """Every process's random states, in rank order (a collective: all ranks must call it)."""
    if not dist.is_distributed():
        return [local]
    states: list = [None] * dist.world_size()
    torch.distributed.all_gather_object(states, local)
    return states


def restore_rng(states: list[dict], augment_rng: torch.Generator) -> None:
    """Put back this process's random states from a checkpoint's per-rank list."""
    if len(states) != dist.world_size():
        warnings.warn(
            f"the checkpoint was made by {len(states)} processes, this run has {dist.world_size()}: "
            "the random streams start afresh, so the run is no longer identical to an unbroken one"
        )
        return
    s = states[dist.rank()]
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss_next"]))
    if s["augment_device"] != augment_rng.device.type:
        warnings.warn(
            f"the checkpoint's augmentation generator ran on {s['augment_device']}, this run uses "
            f"{augment_rng.device.type}: the augmentation random stream starts afresh"
        )
        return
    augment_rng.set_state(s["augment"])
    if "cuda" in s:
        torch.cuda.set_rng_state(s["cuda"], augment_rng.device)


# --- the data order -------------------------------------------------------------------------------


def data_position(step: int, steps_per_epoch: int, dataset_size: int) -> dict:
    """Where in the (seeded, per-epoch) data order the next step starts."""
    epoch, batch = divmod(step, steps_per_epoch)
    return {
        "epoch": epoch,
        "batch": batch,
        "steps_per_epoch": steps_per_epoch,
        "dataset_size": dataset_size,
        "world_size": dist.world_size(),
    }


def check_data_position(state: dict, dataset_size: int, steps_per_epoch: int, force: bool) -> None:
    """The data must be the data the checkpoint was made on, or the order (and so the run) differs."""
    pos = state["data_position"]
    if pos["dataset_size"] != dataset_size or pos["steps_per_epoch"] != steps_per_epoch:
        msg = (
            f"the data set has changed since the checkpoint: {pos['dataset_size']} images "
            f"({pos['steps_per_epoch']} steps per epoch) then, {dataset_size} ({steps_per_epoch}) now"
        )
        if not force:
            raise CheckpointError(
                f"{msg}. Resume on the same data, or pass --force to continue on the new "
                "data (its order then differs from the original run's)."
            )
        warnings.warn(f"{msg}; continuing (--force)")
    if pos["world_size"] != dist.world_size():
        warnings.warn(
            f"the checkpoint was made with {pos['world_size']} processes, this run has "
            f"{dist.world_size()}: each process now sees a different share of every batch"
        )


# --- the config a run folder is resumed with --------------------------------------------------


def config_differences(saved: dict, current: config.Config, schema: int = SCHEMA) -> list[tuple[str, Any, Any]]:
    """(key, value in the run, value now) for every config key that differs (`saved` written with
    run-folder schema `schema`)."""
    saved = config.migrate(saved, schema)
    try:  # keys added to sparsehead since the run was made take their defaults
        saved = config.to_dict(config.from_dict(saved, check_paths=False))
    except config.ConfigError:
        pass

    def flat(d):
        return {f"{s}.{k}": v for s, sec in d.items() if isinstance(sec, dict) for k, v in sec.items()}

    old, new = flat(saved), flat(config.to_dict(current))
    missing = "<absent>"
    return [
        (k, old.get(k, missing), new.get(k, missing))
        for k in sorted(old.keys() | new.keys())
        if old.get(k, missing) != new.get(k, missing)
    ]


def _listing(diffs) -> str:
    return "\n".join(f"  {key}: {old!r} in the run, {new!r} now" for key, old, new in diffs)


def _check_config(saved: dict, cfg: config.Config, force: bool, run_dir: Path, report: bool, schema: int) -> None:
    diffs = config_differences(saved, cfg, schema)
    blocking = [d for d in diffs if d[0] not in RESUME_MAY_DIFFER]
    if blocking and not force:
        raise CheckpointError(
            f"run folder {run_dir} was made with a different config; refusing to resume it with:\n"
            f"{_listing(blocking)}\nResume it as it was (`sparsehead pretrain --resume {run_dir}`), start a "
            "new run folder (--run-dir or train.run_name), or pass --force to continue with the new values."
        )
    if report and dist.is_main():
        if blocking:
            warnings.warn(f"resuming {run_dir} with a changed config (--force):\n{_listing(blocking)}")
        allowed = [d for d in diffs if d[0] in RESUME_MAY_DIFFER]
        if allowed:
            print(f"resuming {run_dir} with changed settings:\n{_listing(allowed)}", file=sys.stderr)


# core/atomic.py's temporary files: ".<name>.<8 characters of mkstemp>.tmp" beside the target
PARTIAL_WRITE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def remove_partial_writes(run_dir: Path) -> None:
    """The temporary files of atomic writes (checkpoints, config.yaml, run.json, results.json, ...)
    that a kill interrupted, in the run folder and its checkpoint folder."""
    checkpoint.remove_partial_writes(run_dir)
    if Path(run_dir).is_dir():
        for tmp in Path(run_dir).iterdir():
            if PARTIAL_WRITE.match(tmp.name) and tmp.is_file():
                tmp.unlink(missing_ok=True)


def resume_point(run_dir: Path, cfg: config.Config, force: bool = False) -> Optional[tuple[Path, dict]]:
    """The run folder's newest good checkpoint, checked against `cfg`; None for a fresh run.

    Damaged checkpoints are set aside (renamed *.damaged) with a warning and the previous good one
    is used; temporary files of interrupted writes are removed. A folder whose checkpoints all fail
    to load is never started over in place: that is an error, or with `force` its history is first
    moved into previous-<time>/. The run's own records (environment.json) are checked here too,
    before any work.
    """
    if dist.is_main():
        remove_partial_writes(run_dir)
    found = agreed_checkpoint(run_dir)
    problem = dist.from_main(_folder_problem(Path(run_dir), found is None, force) if dist.is_main() else None)
    if problem:
        raise CheckpointError(problem)
    if found is None:
        return None
    path, state = found
    if state.get("format") != checkpoint.FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state.get('format')}, this sparsehead resumes "
            f"format {checkpoint.FORMAT}; resume it with the sparsehead version that wrote it"
        )
    _check_config(state["config"], cfg, force, run_dir, report=True, schema=state.get("schema", 1))
    return path, state


def _folder_problem(run_dir: Path, none_loads: bool, force: bool) -> Optional[str]:
    """Why the run cannot start in `run_dir` (rank 0 decides for every rank, so it returns what it
    finds rather than raising while the others wait for it), or None."""
    try:
        if none_loads and checkpoint.holds_checkpoints(run_dir):
            if problem := _history_problem(run_dir, force):
                return problem
        RunDir(run_dir).read_attempts()  # a damaged environment.json stops the run now, not after the data loads
    except RunDirError as err:  # environment.json damaged, or the history could not be moved aside
        return str(err)
    return None


def _history_problem(run_dir: Path, force: bool) -> Optional[str]:
    """A folder with checkpoints of which none loads: never started over in place."""
    folder = checkpoint.checkpoint_dir(run_dir)
    if not force:
        return (
            f"no checkpoint in {folder} loads (the warnings above say why; damaged ones are renamed "
            f"*{checkpoint.DAMAGED}), so {run_dir} cannot be resumed, and starting over would overwrite its "
            "history. Restore a good checkpoint there and resume again, or start afresh with "
            f"`sparsehead pretrain --resume {run_dir} --force`, which first moves the old history into "
            f"{run_dir}/{PREVIOUS}<time>/"
        )
    aside = RunDir(run_dir).set_history_aside()
    warnings.warn(f"no checkpoint of {run_dir} loads; starting afresh (--force), its history moved into {aside}")
    return None


def agreed_checkpoint(run_dir: Path) -> Optional[tuple[Path, dict]]:
    """One resume decision for every rank: rank 0 chooses the newest good checkpoint and sends its
    name and digest; every other rank loads exactly that file and checks the digest. A rank that
    cannot see it, or sees other bytes, stops every rank before any step (replicas resumed from
    different steps would diverge, or hang in their first collective)."""
    if not dist.is_distributed():
        return checkpoint.latest_loadable(run_dir, set_aside=True)
    found = checkpoint.latest_loadable(run_dir, set_aside=True) if dist.is_main() else None
    choice = dist.from_main(None if found is None else (found[0].name, checkpoint.digest(found[1])))
    problem = None
    if choice is not None and not dist.is_main():
        path = checkpoint.checkpoint_dir(run_dir) / choice[0]
        try:
            found = (path, checkpoint.load(path))
        except CheckpointError:  # absent, or damaged on this node's storage
            found = None
        if found is None or checkpoint.digest(found[1]) != choice[1]:
            what = "cannot read" if found is None else "reads other bytes in"
            problem = (
                f"rank {dist.rank()} {what} {path}, the checkpoint rank 0 resumes from; the run folder "
                "must be on storage every node sees (a shared file system), with the same files"
            )
    for message in dist.from_every_rank(problem):
        if message:
            raise CheckpointError(message)
    return found if choice is not None else None


def resume_config(run_dir: str | Path, overrides: list[str], force: bool = False) -> config.Config:
    """The config of `sparsehead pretrain --resume RUN_DIR`: the run's own, plus overrides of keys
    that may change on resume (any other key only with force)."""
    run = RunDir(run_dir)
    run.require_run()
    schema = run.schema
    saved = config.migrate(run.read_config_dict(), schema)
    cfg = config.from_dict(config.merge(saved, overrides))
    _check_config(saved, cfg, force, run.path, report=False, schema=SCHEMA)  # pretrain reports against the checkpoint
    return cfg
