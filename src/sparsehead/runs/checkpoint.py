"""Checkpoint files: written atomically, verified by a content digest, loaded without unpickling code.

A checkpoint is a torch.save'd dict of tensors and plain values. It carries a SHA-256 digest of its
own content, because torch.load does not check the zip's CRCs: a flipped byte in a tensor would
otherwise load silently wrong. Loading uses weights_only=True, so a file that asks to build
arbitrary Python objects (which is how a pickle runs code) is refused.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import torch

from sparsehead.config.sections import TrainConfig
from sparsehead.core.atomic import WriteError, atomic_write
from sparsehead.core.atomic import check_writable as check_folder_writable
from sparsehead.core.errors import SparseheadError
from sparsehead.runs.folder import RunDir

PATTERN = re.compile(r"ckpt-(\d+)\.pt$")
DAMAGED = ".damaged"  # the suffix of a checkpoint file set aside
FORMAT = 1  # the layout of the dict (see docs/reliability.md); bump it when the layout changes


class CheckpointError(SparseheadError, RuntimeError):
    """A checkpoint that cannot be used or written, and why. `damaged`: the file itself is bad (a
    damaged archive, content that does not match its digest), as opposed to a read that failed or a
    loader that refuses what the file holds: only a damaged file is ever set aside."""

    def __init__(self, message: str, damaged: bool = False):
        super().__init__(message)
        self.damaged = damaged


def checkpoint_dir(run_dir: str | Path) -> Path:
    return RunDir(run_dir).checkpoints_dir


# --- writing ----------------------------------------------------------------------------------


def save(run_dir: str | Path, state: dict, step: int, keep: int = 3) -> Path:
    """Write `state` as checkpoints/ckpt-<step>.pt (temp file, fsync, rename); keep the newest `keep`.

    A failed write (disk full, read-only folder) leaves no partial file and the older checkpoints intact.
    """
    state = _to_cpu({**state, "format": FORMAT})
    state["digest"] = digest(state)
    path = checkpoint_dir(run_dir) / f"ckpt-{step:08d}.pt"

    try:
        atomic_write(path, lambda f: torch.save(state, f), needed=nbytes(state))
    except WriteError as err:
        previous = list_checkpoints(run_dir)
        kept = f"the previous checkpoint {previous[-1].name} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(
            f"could not write a checkpoint, {err}; {kept}; then continue with `sparsehead pretrain --resume {run_dir}`"
        ) from None
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def digest(state) -> str:
    """SHA-256 of a checkpoint's content: every tensor's dtype, shape and bytes, and every plain value."""
    hasher = hashlib.sha256()
    _feed(hasher, state)
    return hasher.hexdigest()


def _feed(hasher, obj) -> None:  # hasher: a hashlib object
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"T{t.dtype}{tuple(obj.shape)}|".encode())
        hasher.update(t.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        hasher.update(f"D{len(obj)}|".encode())
        for key in sorted(obj, key=repr):
            _feed(hasher, key)
            _feed(hasher, obj[key])
    elif isinstance(obj, (list, tuple)):
        hasher.update(f"{type(obj).__name__}{len(obj)}|".encode())
        for item in obj:
            _feed(hasher, item)
    else:
        hasher.update(f"{type(obj).__name__}:{obj!r}|".encode())


def nbytes(obj) -> int:
    """The bytes of every tensor in a (nested) state: about the size of its file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return 0


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return type(obj)((k, _to_cpu(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def check_writable(run_dir: str | Path) -> None:
    """Before any work: the run folder (and its checkpoints/ folder) can be created and written."""
    try:
        check_folder_writable(checkpoint_dir(run_dir))
    except WriteError as err:
        raise CheckpointError(
            f"cannot write to the run folder {run_dir}: {err}; a writable place can be chosen with --run-dir or "
            "train.out_dir"
        ) from None


def check_free_space(run_dir: str | Path, model: torch.nn.Module, keep: int = TrainConfig.keep_checkpoints) -> None:
    """Before training: room for the `keep` checkpoints a run keeps (train.keep_checkpoints) plus the
    one being written beside them, less those already there (a resumed run's).

    A checkpoint holds the weights and the optimiser's moments: about three times the model's state.
    """
    size = 3 * nbytes(model.state_dict())
    present = len(list_checkpoints(run_dir))
    more = max(1, keep + 1 - present)
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)  # moved aside with a run's history, it is made again here
    free = shutil.disk_usage(folder).free
    if free < more * size:
        raise CheckpointError(
            f"the run folder {run_dir} has {free / 2**20:.1f} MiB free, but a checkpoint of this model takes "
            f"about {size / 2**20:.1f} MiB and the run needs room for {more} more (train.keep_checkpoints={keep} "
            f"kept plus the one being written, {present} there now): about {more * size / 2**20:.1f} MiB; free "
            "space there, lower train.keep_checkpoints or choose another train.out_dir"
        )


# --- reading ----------------------------------------------------------------------------------


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def load(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint safely: tensors and plain containers only, content verified by its digest.

    Every failure is a CheckpointError, marked `damaged` only where the file itself is bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # whatever a damaged or foreign file makes the loader raise
        raise _load_failure(path, err) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a sparsehead checkpoint (no 'model' entry)")
    stored = state.pop("digest", None)
    if stored is None:
        warnings.warn(f"{path} has no content digest (written by an older sparsehead); it cannot be verified")
    elif digest(state) != stored:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its content does not match the digest "
            "stored in it (a damaged disk or an interrupted copy)",
            damaged=True,
        )
    return state


def _load_failure(path: Path, err: Exception) -> CheckpointError:
    """The error of a torch.load that failed: a damaged archive, a read the storage refused, or
    content this loader refuses (a truncated file makes torch raise OSError too: the archive decides)."""
    detail = f"{type(err).__name__}: {str(err).split('. ')[0].splitlines()[0][:150] if str(err) else 'no detail'}"
    if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):  # a request for Python objects
        return CheckpointError(
            f"refusing to load {path}: it asks to build arbitrary Python objects, which can run code "
            f"({_first_reason(err)}). sparsehead checkpoints hold only tensors and plain values; if you "
            "trust the file's source, re-save its weights as a plain state_dict."
        )
    if _archive_damaged(path):
        return CheckpointError(f"checkpoint {path} is truncated or corrupt ({detail})", damaged=True)
    if isinstance(err, OSError):  # a whole archive that could not be read: a later read may work
        return CheckpointError(f"cannot read checkpoint {path} ({detail}); check the storage, then run again")
    return CheckpointError(
        f"cannot load checkpoint {path} ({detail}); its archive is intact, so it may hold what this "
        "sparsehead and torch cannot read (written by a newer version?)"
    )


def _archive_damaged(path: Path) -> bool:
    """The file is not a whole zip archive, or an entry fails its CRC (torch.load checks neither)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is not None
    except OSError:  # the storage failed, not necessarily the file
        return False
    except Exception:  # zipfile's own errors and whatever a damaged header makes it raise
        return True


def _first_reason(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if "GLOBAL" in ln]
    return lines[0][:200] if lines else "no detail"


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


def latest_loadable(run_dir: str | Path, set_aside: bool = False) -> Optional[tuple[Path, dict]]:
    """The newest checkpoint of a run that loads; newer ones that do not are skipped with a warning.

    set_aside=True renames the damaged ones (CheckpointError.damaged) to *.damaged, so that keeping
    the newest K checkpoints never keeps a damaged file in place of a good one (the file stays
    there for inspection). A file that could not be read, or that this loader refuses, is left as it is.
    """
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load(path)
        except CheckpointError as err:
            if not err.damaged:
                warnings.warn(f"skipping checkpoint {path.name}, left in place: {err}")
                continue
            note = ""
            if set_aside:
                try:
                    path.replace(path.with_name(path.name + DAMAGED))
                    note = f" (renamed to {path.name}{DAMAGED})"
                except OSError as rename:  # a read-only folder: it stays, and is skipped again next time
                    note = f" (left in place: cannot rename it, {rename.strerror})"
            warnings.warn(f"skipping damaged checkpoint{note}: {err}")
    return None


def holds_checkpoints(run_dir: str | Path) -> bool:
    """The run folder has checkpoint files, loadable or not (those set aside as damaged count too)."""
    folder = checkpoint_dir(run_dir)
    return folder.is_dir() and any(PATTERN.search(p.name.removesuffix(DAMAGED)) for p in folder.iterdir())


def remove_partial_writes(run_dir: str | Path) -> None:
    """Temporary files of checkpoint writes a kill interrupted (never renamed into place)."""
    folder = checkpoint_dir(run_dir)
    if folder.is_dir():
        for tmp in folder.glob(".ckpt-*.tmp"):
            tmp.unlink(missing_ok=True)
