"""The data sources: the one place that names each source, how it is read and its defaults.

`data.source` takes these names. A source is read by scikit-learn (the embedded digits), by
torchvision (its copy of the set under data.root) or from image files in a folder layout
(readers.py lists them) or from shards (WebDataset tars, Hugging Face parquet: shards/), these two
kinds read record by record (records.py; memory or stream storage, data.storage); its default
evaluation crop is the centre crop its papers evaluate on. The memory loaders (datasets.py), the
record indexes (records.py), the storage choice (storage.py) and the crops all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IMAGENET_CROP_RATIO = 0.875  # Resize(256) + CenterCrop(224): the ImageNet evaluation of every SSL paper


@dataclass(frozen=True)
class Source:
    name: str
    reader: Literal["sklearn", "torchvision", "folder", "webdataset", "parquet"]
    description: str  # its part of data.source's help
    eval_crop: float = 1.0  # the evaluation crop ratio by default (data.eval_crop overrides it for records)


SOURCES = {
    s.name: s
    for s in (
        Source("digits", "sklearn", "embedded, scikit-learn's 8x8 digits"),
        Source("cifar10", "torchvision", "torchvision's copy under data.root"),
        Source("cifar100", "torchvision", "torchvision's copy under data.root"),
        Source("stl10", "torchvision", "torchvision's copy; its unlabeled split joins pretraining"),
        Source("imagefolder", "folder", "a folder holding train/ and test/ (or val/) class sub-folders"),
        Source("imagenet", "folder", "train/<wnid>/*.JPEG, val/<wnid>/*", IMAGENET_CROP_RATIO),
        Source("imagenet100", "folder", "imagenet's folders, CMC's 100 classes", IMAGENET_CROP_RATIO),
        Source("tinyimagenet", "folder", "train/<wnid>/images, val/images + val_annotations.txt"),
        Source("webdataset", "webdataset", "WebDataset shards train/*.tar, val/*.tar (or test/): KEY.jpg + KEY.cls"),
        Source("parquet", "parquet", "Hugging Face parquet shards train-*.parquet, validation-*.parquet (or data/)"),
    )
}
NAMES = tuple(SOURCES)
FOLDER_SOURCES = tuple(name for name, s in SOURCES.items() if s.reader == "folder")
# Read record by record from image files or shards (records.py): decoded into memory or streamed.
RECORD_SOURCES = tuple(name for name, s in SOURCES.items() if s.reader in ("folder", "webdataset", "parquet"))
HELP = "data set: " + "; ".join(f"{s.name} ({s.description})" for s in SOURCES.values())
