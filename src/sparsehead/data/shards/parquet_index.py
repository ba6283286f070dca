"""data.source=parquet: Hugging Face datasets' parquet shards, directly under data.root or under
data/: train-*.parquet and validation-*.parquet (or test-*.parquet).

The image column holds {bytes, path} structs (`image` for imagenet-1k, `img` for cifar10: the only
such column is found by itself; data.image_column names it), the label column integers
(data.label_column). The index lists each record's file, row group and row, from the files'
metadata and their label column alone; the class names are the label's ClassLabel names where the
file's Hugging Face metadata holds them. Parquet compresses a column chunk of a row group as a
whole, so a record is read with its row group's image column: each reading process keeps the last
GROUPS_KEPT row groups it read (an in-order pass reads each once; docs/performance.md, Shards, measures a
shuffled one).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np

from sparsehead.data.errors import DataError
from sparsehead.data.settings import DataConfig
from sparsehead.data.shards import layout
from sparsehead.data.shards.handles import OpenFiles

GROUPS_KEPT = 8  # row groups' image bytes held per reading process
PATTERNS = {
    "train": ("train-*.parquet", "data/train-*.parquet"),
    "test": ("validation-*.parquet", "data/validation-*.parquet", "test-*.parquet", "data/test-*.parquet"),
}
LAYOUT = (
    "a parquet data set is a folder holding train-*.parquet and validation-*.parquet (or test-*.parquet), "
    "directly or under data/"
)


def pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError('data.source=parquet needs pyarrow: pip install "sparsehead[shards]"') from None
    return pq


@dataclasses.dataclass
class ParquetRecords(layout.ShardRecords):
    group: np.ndarray = None  # int64: the record's row group in its file
    row: np.ndarray = None  # int64: its row in that group
    image_column: str = ""  # the column read: "<struct column>.bytes", or a binary column itself

    def __post_init__(self):
        self._files = OpenFiles(lambda s: pyarrow_parquet().ParquetFile(self.files[s]), lambda f: f.close())
        self._groups, self._lock = OrderedDict(), threading.Lock()

    def _group(self, shard: int, group: int):
        with self._lock:
            key = (shard, group)
            column = self._groups.pop(key, None)
            if column is None:
                table = self._files.get(shard).read_row_group(group, columns=[self.image_column])
                column = table.column(0).combine_chunks()
                if self.image_column.endswith(".bytes"):  # {bytes} structs: a null struct gives null bytes
                    column = column.flatten()[0]
            self._groups[key] = column
            if len(self._groups) > GROUPS_KEPT:
                self._groups.popitem(last=False)
            return column

    def source(self, i: int) -> bytes:
        value = self._group(int(self.shard[i]), int(self.group[i]))[int(self.row[i])].as_py()
        return value or b""  # a record without bytes (a path only): an empty, unreadable image


def image_column(schema, wanted: Optional[str], path: Path) -> str:
    """The column to read the image bytes from: `wanted`'s, or the one of {bytes, ...} structs."""
    import pyarrow as pa

    def struct_of_bytes(t) -> bool:
        return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0 and pa.types.is_binary(t.field("bytes").type)

    if wanted is not None:
        if wanted not in schema.names:
            raise DataError(f"data.image_column={wanted}: {path} has no such column (its columns: {schema.names})")
        kind = schema.field(wanted).type
        if struct_of_bytes(kind):
            return f"{wanted}.bytes"
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            return wanted
        raise DataError(f"data.image_column={wanted}: in {path} it holds {kind}, not image bytes or {{bytes, path}}")
    found = [f.name for f in schema if struct_of_bytes(f.type)]
    if len(found) != 1:
        which = f"{len(found)} such columns ({', '.join(found)})" if found else f"none (its columns: {schema.names})"
        raise DataError(
            f"{path}: the image column holds {{bytes, path}} structs, and it has {which}; set data.image_column"
        )
    return f"{found[0]}.bytes"


def _class_names(schema, label: str) -> Optional[list[str]]:
    """The ClassLabel names of the label column in the file's Hugging Face metadata, if any."""
    try:
        features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
        names = features[label]["names"]
    except (KeyError, TypeError, ValueError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def _scanner(cfg: DataConfig):
    pq = pyarrow_parquet()

    def scan(files: list[Path]) -> layout.Columns:
        parts = {"paths": [], "shard": [], "group": [], "row": [], "values": []}
        columns, names = set(), None
        for s, path in enumerate(files):
            try:
                meta = pq.ParquetFile(path)
                schema = meta.schema_arrow
                columns.add(image_column(schema, cfg.image_column, path))
                if cfg.label_column not in schema.names:
                    raise DataError(
                        f"data.label_column={cfg.label_column}: {path} has no such column (its columns: "
                        f"{schema.names}); set data.label_column"
                    )
                values = meta.read(columns=[cfg.label_column]).column(0)
            except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
                raise DataError(f"cannot read parquet file {path} ({err}); it is damaged: restore it") from None
            if values.null_count:
                raise DataError(f"{path}: {values.null_count} record(s) have no {cfg.label_column}; fix the shard")
            names = names or _class_names(schema, cfg.label_column)
            rows = np.array([meta.metadata.row_group(g).num_rows for g in range(meta.metadata.num_row_groups)])
            total, starts = int(rows.sum()), np.repeat(np.cumsum(rows) - rows, rows)  # numpy: no object per record
            parts["paths"] += [f"{path.name}/{r}" for r in range(total)]
            parts["shard"].append(np.full(total, s))
            parts["group"].append(np.repeat(np.arange(len(rows)), rows))
            parts["row"].append(np.arange(total) - starts)
            parts["values"].append(values.to_numpy())
        if len(columns) > 1:
            raise DataError(f"the files {files[0].parent} hold the images in different columns: {sorted(columns)}")
        out = {k: v if k == "paths" else np.concatenate(v).astype(np.int64) for k, v in parts.items()}
        return {**out, "names": names, "column": columns.pop()}

    return scan


def find(root: Path, split: str) -> tuple[str, list[Path]]:
    return layout.split_files(root, PATTERNS[split], split, LAYOUT)


def index(cfg: DataConfig, split: str) -> ParquetRecords:
    def make(where, files, columns, labels, classes):
        return ParquetRecords(
            where,
            files,
            columns["paths"],
            columns["shard"],
            labels,
            classes,
            columns["group"],
            columns["row"],
            columns["column"],
        )

    return layout.split_records(cfg, split, find, _scanner(cfg), make)
