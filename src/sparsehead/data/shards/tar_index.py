"""data.source=webdataset: WebDataset tar shards, data.root/train/*.tar and val/*.tar (or test/*.tar).

A sample is the members sharing a key (the member's path up to the first dot of its file name):
KEY.<jpg|jpeg|png|webp> the image, KEY.cls its integer label as text; other members are left
alone. The index of a split lists each sample's shard, the byte offset and size of its image inside
the shard and its label, read from the tar headers once (a header per member, the data skipped
over: uncompressed tars only) and cached (layout.py). A record is then read with one pread on the
shard's file, held open by the reading process (handles.py).
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
from pathlib import Path

import numpy as np

from sparsehead.data.errors import DataError
from sparsehead.data.settings import DataConfig
from sparsehead.data.shards import layout
from sparsehead.data.shards.handles import OpenFiles

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
PATTERNS = {"train": ("train/*.tar",), "test": ("val/*.tar", "test/*.tar")}
LAYOUT = "a webdataset data set is a folder holding train/*.tar and val/*.tar (or test/*.tar)"


@dataclasses.dataclass
class TarRecords(layout.ShardRecords):
    offset: np.ndarray = None  # int64: where the image's bytes start in its shard
    size: np.ndarray = None  # int64: how many

    def __post_init__(self):
        self._files = OpenFiles(lambda s: os.open(self.files[s], os.O_RDONLY), os.close)

    def source(self, i: int) -> bytes:
        fd = self._files.get(int(self.shard[i]))
        return os.pread(fd, int(self.size[i]), int(self.offset[i]))


def _damaged(path: Path, why: str) -> DataError:
    return DataError(
        f"shard {path} is damaged or not an uncompressed tar ({why}); rewrite it (e.g. with `tar -cf`) "
        "or remove it from the data set"
    )


def _check_end(tar: tarfile.TarFile, path: Path, length: int) -> None:
    """A tar ends in zero blocks (at least two: the end-of-archive marker): tarfile reads a file cut at
    a header as one that ends there, so a shard cut between its members is caught here."""
    tar.fileobj.seek(tar.offset)
    rest = tar.fileobj.read(min(length - tar.offset, 1 << 20))
    if len(rest) < 2 * tarfile.BLOCKSIZE or rest.count(0) != len(rest):
        raise _damaged(path, f"it is cut short: no end-of-archive blocks after byte {tar.offset}")


def _scan_one(path: Path) -> tuple[list, list, list, list]:
    """The (name, offset, size, label value) of each sample of one shard, in the shard's order."""
    images, labels, order = {}, {}, []
    length = path.stat().st_size
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, file_name = member.name.rpartition("/")
                stem, dot, ext = file_name.partition(".")
                key = f"{folder}/{stem}" if folder else stem
                ext = ext.lower() if dot else ""
                if member.offset_data + member.size > length:
                    raise _damaged(path, f"{member.name} runs past the end of the file")
                if key not in images and key not in labels:
                    order.append(key)
                if ext in IMAGE_EXTENSIONS and key not in images:
                    images[key] = member
                elif ext == "cls":
                    labels[key] = tar.extractfile(member).read()
            _check_end(tar, path, length)
    except (tarfile.TarError, EOFError) as err:
        raise _damaged(path, str(err) or type(err).__name__) from None
    names, offsets, sizes, values = [], [], [], []
    for key in order:
        if key not in images or key not in labels:
            lacks = f"an image (KEY.{'|'.join(IMAGE_EXTENSIONS)})" if key not in images else "a label (KEY.cls)"
            raise DataError(f"sample {key} of shard {path} has no {lacks}; each sample needs both: fix the shard")
        text = labels[key].decode("utf-8", "replace").strip()
        if not text.lstrip("-").isdigit():
            raise DataError(f"sample {key} of shard {path}: its .cls holds {text[:40]!r}, not an integer label")
        member = images[key]
        names.append(f"{path.name}/{member.name}")
        offsets.append(member.offset_data)
        sizes.append(member.size)
        values.append(int(text))
    return names, offsets, sizes, values


def scan(files: list[Path]) -> layout.Columns:
    columns = {"paths": [], "shard": [], "offset": [], "size": [], "values": []}
    for s, path in enumerate(files):
        try:
            names, offsets, sizes, values = _scan_one(path)
        except OSError as err:
            raise DataError(f"cannot read shard {path} ({err.strerror or err}); check that it is readable") from None
        columns["paths"] += names
        columns["shard"] += [s] * len(names)
        columns["offset"] += offsets
        columns["size"] += sizes
        columns["values"] += values
    if not columns["paths"]:
        raise DataError(f"the shards {files[0].parent}/*.tar hold no samples; {LAYOUT}")
    return {k: v if k == "paths" else np.asarray(v, dtype=np.int64) for k, v in columns.items()}


def find(root: Path, split: str) -> tuple[str, list[Path]]:
    return layout.split_files(root, PATTERNS[split], split, LAYOUT)


def index(cfg: DataConfig, split: str) -> TarRecords:
    def make(where, files, columns, labels, classes):
        return TarRecords(
            where, files, columns["paths"], columns["shard"], labels, classes, columns["offset"], columns["size"]
        )

    return layout.split_records(cfg, split, find, scan, make)
