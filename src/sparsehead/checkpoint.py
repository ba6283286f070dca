"""Checkpoints: written atomically, loaded without unpickling code (weights_only=True)."""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Optional

import torch

from .io import atomic_write

PATTERN = re.compile(r"ckpt-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, and why."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: str | Path, state: dict, step: int, keep: int = 3) -> Path:
    """Write `state` as checkpoints/ckpt-<step>.pt (temp file, fsync, rename); keep the last `keep`."""
    folder = checkpoint_dir(run_dir)
    path = folder / f"ckpt-{step:08d}.pt"
    atomic_write(path, lambda f: torch.save(state, f))
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def load(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint safely: tensors and plain containers only, never arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it needs arbitrary unpickling, which can run code "
            f"({str(err).splitlines()[0]}). Only load checkpoints from sources you trust, and re-save "
            "them as plain state_dicts.") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({err})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a sparsehead checkpoint (no 'model' entry)")
    return state


def find(path_or_run: str | Path) -> Path:
    """A checkpoint file given itself or its run folder (the newest one in the folder)."""
    p = Path(path_or_run)
    if p.is_file():
        return p
    if p.is_dir():
        found = list_checkpoints(p)
        if not found:
            raise CheckpointError(f"run folder {p} holds no checkpoint (looked in {checkpoint_dir(p)})")
        return found[-1]
    raise CheckpointError(f"{p} is neither a checkpoint file nor a run folder")


def latest_loadable(run_dir: str | Path) -> Optional[tuple[Path, dict]]:
    """The newest checkpoint of a run that loads; damaged newer ones are skipped with a warning."""
    import warnings
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load(path)
        except CheckpointError as err:
            warnings.warn(f"skipping damaged checkpoint: {err}")
    return None
