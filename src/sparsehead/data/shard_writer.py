"""WebDataset tar shards written from a folder data set (`sparsehead shard`): a cluster then reads a
few hundred large files instead of a million small ones.

Each split of a folder source (readers.index: the data set's one class list, by name) becomes
OUT/train/train-NNNNNN.tar and OUT/val/val-NNNNNN.tar (the test/val split). A sample is KEY.<ext>,
the image file's bytes as they are (not re-encoded), and KEY.cls, its label as text. KEY is the
file's position in the split's sorted listing and its path, made safe: the same for any seed or
shard size, and free of dots (a reader ends the key at the first one). The extension is the file's,
lower-cased, .jpeg written .jpg: the names timm, OpenCLIP and DALI look for by default.

The samples go in one fixed shuffled order (`seed`), so that every shard holds a mix of classes: a
reader that streams shards one after another through a small shuffle buffer would otherwise see
one class at a time. The shards are byte for byte the same on every run with the same settings.

Built to survive a kill: the settings are written first (PLAN), each shard to a temporary file
renamed when whole (core.atomic), the index OUT/shards.json last, so its presence means done. Run
again with the same settings, a conversion keeps the shards already written (each checked to hold
exactly its planned samples) and goes on; a finished one is left as it is.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from sparsehead.core.atomic import atomic_write_json
from sparsehead.data import readers, sources
from sparsehead.data.errors import DataError
from sparsehead.data.settings import DataConfig
from sparsehead.data.tar_writer import Ahead, Limits, read_back, write_shard

INDEX, PLAN = "shards.json", ".shard-plan.json"
FOLDERS = {"train": "train", "test": "val"}  # split -> its folder (and shard name) under OUT
EXTENSIONS = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "webp": "webp"}  # what the shard readers take
VERSION = 1


@dataclass
class _Split:
    name: str  # its folder and shard prefix: train or val
    index: readers.FileIndex
    order: np.ndarray  # the written order: positions in `index`
    members: list[str]  # each position's image member name, KEY.<ext>

    def sample(self, i: int) -> tuple[str, int]:
        """The image member name and the label of the i-th sample written."""
        return self.members[self.order[i]], int(self.index.labels[self.order[i]])

    def planned(self, i: int) -> list[str]:
        """The member names of the i-th sample written."""
        name = self.members[self.order[i]]
        return [name, name.partition(".")[0] + ".cls"]


def _key(position: int, path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.rpartition(".")[0])[:80]  # the names fit a plain ustar header
    return f"{position:08d}_{stem}"


def _plan_split(idx: readers.FileIndex, name: str, seed: int) -> _Split:
    members, unsupported = [], {}
    for i, path in enumerate(idx.paths):
        ext = EXTENSIONS.get(path.rpartition(".")[2].lower())
        if ext is None:
            unsupported.setdefault(path.rpartition(".")[2].lower(), path)
        members.append(f"{_key(i, path)}.{ext}")
    if unsupported:
        found = ", ".join(f".{e} (e.g. {idx.root / p})" for e, p in unsupported.items())
        raise DataError(
            f"{idx.root} holds images in {found}; shards carry jpg, png and webp files only (what the shard "
            "readers decode): convert those files (e.g. to PNG) or move them out of the data set"
        )
    order = np.random.default_rng(seed).permutation(len(idx))
    return _Split(name, idx, order, members)


def _digest(idx: readers.FileIndex) -> str:
    text = "\n".join(f"{p}\t{label}" for p, label in zip(idx.paths, idx.labels.tolist()))
    return hashlib.sha256(("\n".join(idx.classes) + "\n\n" + text).encode()).hexdigest()


def _shard_path(out: Path, name: str, k: int) -> Path:
    return out / name / f"{name}-{k:06d}.tar"


def _kept(out: Path, split: _Split) -> tuple[list[dict], int]:
    """The shards of `split` an interrupted run left whole, in order (each holding exactly the
    samples planned for its place), and how many samples they hold. The shards after them, and
    temporary files, are removed: they are written again."""
    kept, done = [], 0
    while (path := _shard_path(out, split.name, len(kept))).is_file():
        names, sha = read_back(path)
        count = len(names) // 2 if names else 0
        if not count or done + count > len(split.order):
            break
        if names != [m for i in range(done, done + count) for m in split.planned(i)]:
            break
        kept.append(
            {"file": f"{split.name}/{path.name}", "samples": count, "bytes": path.stat().st_size, "sha256": sha}
        )
        done += count
    folder = out / split.name
    for path in _ours(folder, split.name):
        if path.name.endswith(".tmp") or int(path.stem.rpartition("-")[2]) >= len(kept):
            path.unlink()
    return kept, done


def _ours(folder: Path, name: str) -> list[Path]:
    """The shards and the temporary files of shards that a conversion wrote in `folder`."""
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^{name}-\d{{6}}\.tar$|^\.{name}-\d{{6}}\.tar\..*\.tmp$")
    return sorted(p for p in folder.iterdir() if pattern.match(p.name))


def _convert(out: Path, split: _Split, limits: Limits, threads: int, progress: bool) -> dict:
    from tqdm import tqdm

    shards, start = _kept(out, split)
    paths, total = split.index.full_paths(), len(split.order)
    quiet = {} if sys.stderr.isatty() else {"mininterval": 60}  # a batch job's log: a line a minute
    bar = tqdm(total=total, initial=start, unit="img", desc=split.name, disable=not progress, **quiet)
    with bar, Ahead([paths[i] for i in split.order[start:]], threads) as ahead:
        while start < total:
            path = _shard_path(out, split.name, len(shards))
            shard = write_shard(path, split.sample, start, total, ahead, limits, bar)
            shards.append({"file": f"{split.name}/{path.name}", **shard})
            start += shard["samples"]
    per_class = np.bincount(split.index.labels, minlength=len(split.index.classes))
    return {"samples": total, "per_class": per_class.tolist(), "shards": shards}


def _settings_in(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _existing(out: Path, settings: dict, force: bool) -> bool:
    """Whether `out` holds the finished conversion of `settings`. An unfinished one of the same
    settings is resumed; anything else in a non-empty `out` is refused, or with `force` the
    conversion's files are removed and it starts afresh."""
    if not out.is_dir() or not any(out.iterdir()):
        return False
    for name, finished in ((INDEX, True), (PLAN, False)):
        if (out / name).is_file():
            old = _settings_in(out / name)
            if old == settings and not force:
                return finished
            if not force:
                differ = sorted(k for k in settings if (old or {}).get(k) != settings[k]) if old else ["unreadable"]
                raise DataError(
                    f"{out} holds shards written with other settings ({', '.join(differ)}); give a new folder, "
                    "or --force (force=True) to replace them"
                )
            break
    else:
        if not force:
            raise DataError(
                f"{out} is not empty and holds no conversion of `sparsehead shard`; give an empty or new folder, "
                "or --force (force=True) to write the shards into it"
            )
    for path in [out / INDEX, out / PLAN, *(p for n in FOLDERS.values() for p in _ours(out / n, n))]:
        path.unlink(missing_ok=True)
    foreign = sorted(p for n in FOLDERS.values() for p in (out / n).glob("*.tar"))
    if foreign:
        raise DataError(f"{foreign[0]} would be read as a shard of the data set too; move it out of {out}")
    return False


def write_shards(
    cfg: DataConfig,
    out: str | Path,
    limits: Limits = Limits(10_000, 10**9),
    splits: tuple[str, ...] = ("train", "test"),
    seed: int = 0,
    threads: int = 8,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write the `splits` ("train", "test") of the folder data set of `cfg` as WebDataset shards in
    `out` (shards of at most `limits`, samples shuffled by `seed`, files read by `threads`); return
    the index also written to out/shards.json. Resumes an interrupted conversion of the same settings;
    `force` replaces a conversion of other settings. Raises DataError, WriteError (core.atomic)."""
    if not splits or set(splits) - set(FOLDERS):
        raise DataError(f"splits={splits!r}: expected train and/or test")
    if cfg.source not in sources.FOLDER_SOURCES:
        raise DataError(
            f"data.source={cfg.source}: shard reads folder sources ({', '.join(sources.FOLDER_SOURCES)}); "
            f"{cfg.source} is not one. Train from it directly, or save its images as an imagefolder first"
        )
    out = Path(out).expanduser()
    plans = [_plan_split(readers.index(cfg, split), FOLDERS[split], seed) for split in splits]
    settings = {
        "version": VERSION,
        "source": cfg.source,
        "seed": seed,
        "shard_samples": limits.samples,
        "shard_bytes": limits.bytes,
        "splits": {plan.name: _digest(plan.index) for plan in plans},  # the files and labels of each
    }
    if _existing(out, settings, force):
        (out / PLAN).unlink(missing_ok=True)
        return json.loads((out / INDEX).read_text())
    atomic_write_json(out / PLAN, {"settings": settings})
    index = {
        "format": "webdataset",
        "written_by": "sparsehead shard",
        "root": str(Path(cfg.root).expanduser().resolve()),
        "settings": settings,
        "classes": plans[0].index.classes,
        "splits": {plan.name: _convert(out, plan, limits, threads, progress) for plan in plans},
    }
    atomic_write_json(out / INDEX, index)  # last: its presence means every shard is whole
    (out / PLAN).unlink()
    return index
