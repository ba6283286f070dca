"""Shard sets on disk, whatever their format: which shard files hold a split, the record index of a
split (scanned once, cached in data.cache_dir while every shard keeps its size and mtime) and the
one class list of the data set, made of the training split's label values.

A format (tar_index.py, parquet_index.py) gives its file patterns and a scan: the shard files ->
the columns of its records (`shard`: which file, `values`: the label as stored, `paths`: a name per
record, and its own coordinates of the bytes). ShardRecords holds them and answers what
records.Records asks; the format's subclass reads a record's bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from sparsehead.data import readers
from sparsehead.data.cache import read_cache, write_cache
from sparsehead.data.errors import DataError
from sparsehead.data.settings import DataConfig
from sparsehead.data.shard_writer import INDEX as WRITTEN_INDEX

SCAN_VERSION = 1
Columns = dict  # name -> np.ndarray (one entry per record), "paths": list[str], "names": class names or None


def split_files(root: Path, patterns: tuple[str, ...], split: str, layout: str) -> tuple[str, list[Path]]:
    """The first of `patterns` (relative to `root`) that matches files, as (where, sorted files)."""
    for pattern in patterns:
        files = sorted(p for p in root.glob(pattern) if p.is_file())
        if files:
            return str(root / pattern), files
    raise DataError(
        f"data.root={root} holds no {' or '.join(patterns)} for the {split} split; {layout}; check data.root"
    )


@dataclasses.dataclass
class ShardRecords:
    """The records of one split of a shard set (records.Records); np.ndarray fields hold one entry a record."""

    where: str  # the split's shard pattern
    files: list[str]  # its shard files
    paths: list[str]  # each record's name: "<shard file name>/<name inside it>"
    shard: np.ndarray  # int64: the record's file in `files`
    labels: np.ndarray  # int64: the index of its label value in `classes`
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, i: int) -> str:
        """Record i's name in messages: its shard's path, then its name inside it."""
        return os.path.join(os.path.dirname(self.files[self.shard[i]]), self.paths[i])

    def stamps(self) -> torch.Tensor:
        """(size, mtime) of each record's shard: a shard rewritten changes every record it holds."""
        return readers.stamps(self.files)[torch.from_numpy(self.shard)]

    def select(self, keep):
        keep = np.asarray(keep, dtype=np.int64)
        kept = {
            f.name: getattr(self, f.name)[keep]
            for f in dataclasses.fields(self)
            if f.init and isinstance(getattr(self, f.name), np.ndarray)
        }
        return dataclasses.replace(self, paths=[self.paths[i] for i in keep], **kept)

    def __getstate__(self):  # to DataLoader workers (spawn) without this process's open files
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state):
        self.__init__(**state)


def _scanned(cfg: DataConfig, where: str, files: list[Path], scan: Callable[[list[Path]], Columns]) -> Columns:
    """scan(files), from data.cache_dir while the same files keep their size and mtime."""
    names, now = "\n".join(str(f) for f in files), readers.stamps([str(f) for f in files])
    cache: Optional[Path] = None
    if cfg.cache_dir:
        key = hashlib.sha256(
            f"v{SCAN_VERSION} {cfg.source} {where} {cfg.label_column} {cfg.image_column}".encode()
        ).hexdigest()[:24]
        cache = Path(cfg.cache_dir).expanduser() / f"shards-{key}.pt"
        blob = read_cache(
            cache,
            "shard index",
            "scanning the shards again",
            lambda b: b["files"] == names and torch.equal(b["stamps"], now),
        )
        if blob is not None:
            return {
                k: (v.numpy() if isinstance(v, torch.Tensor) else v.split("\n") if k == "paths" else v)
                for k, v in blob["columns"].items()
            }
    columns = scan(files)
    if cache is not None:
        stored = {
            k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else "\n".join(v) if k == "paths" else v)
            for k, v in columns.items()
        }
        write_cache(cache, {"files": names, "stamps": now, "columns": stored}, "shard index")
    return columns


def written_class_names(root: Path) -> Optional[list[str]]:
    """The class names `sparsehead shard` kept in its index (root/shards.json, label v names classes[v]),
    or None where the shards came from elsewhere."""
    index = root / WRITTEN_INDEX
    if not index.is_file():
        return None
    try:
        names = json.loads(index.read_text())["classes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{index} cannot be read ({err}): it is damaged; write the shards again with `sparsehead shard`, "
            "or remove it to name the classes by their label values"
        ) from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise DataError(f"{index}: 'classes' is not a list of names; write the shards again with `sparsehead shard`")
    return names


def split_records(cfg: DataConfig, split: str, find: Callable[[Path, str], tuple[str, list[Path]]], scan, make):
    """The records of `split` ("test": the evaluation split; else train), labelled by the training
    split's sorted label values: `find(root, split)` -> (where, files), `scan(files)` -> columns,
    `make(where, files, columns, labels, classes)` -> the format's ShardRecords. A label value of
    the evaluation split that training lacks is an error here, before any work."""
    root = Path(cfg.root).expanduser().resolve()
    train_where, train_files = find(root, "train")
    train = _scanned(cfg, train_where, train_files, scan)
    values = np.unique(train["values"])
    names = train.get("names") or written_class_names(root)
    classes = [names[v] if names and 0 <= v < len(names) else str(v) for v in values.tolist()]
    where, files, columns = train_where, train_files, train
    if split == "test":
        where, files = find(root, "test")
        columns = _scanned(cfg, where, files, scan)
    unknown = np.setdiff1d(columns["values"], values)
    if len(unknown):
        raise DataError(
            f"{where} holds label {unknown[0]} (of {len(unknown)} label value(s) the training split lacks) "
            f"that {train_where} never has; every split is labelled by the training split's label values "
            f"({values[0]}..{values[-1]}, {len(values)} classes): check the labels or the shards"
        )
    labels = np.searchsorted(values, columns["values"]).astype(np.int64)
    return make(where, [str(f) for f in files], columns, labels, classes)
