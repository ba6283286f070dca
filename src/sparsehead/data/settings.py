"""The data settings (config section `data`): the source, its size and subset, the storage, the
caches. Its own module, so that every data module can name the type it receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from sparsehead.core.errors import ConfigError
from sparsehead.core.options import opt
from sparsehead.data import sources


@dataclass
class DataConfig:
    source: Literal[sources.NAMES] = opt("digits", sources.HELP)
    root: Optional[str] = opt(None, "data folder (torchvision sets, image folders, shards); unused for digits")
    image_column: Optional[str] = opt(
        None, "data.source=parquet: the column of image bytes (null: the one holding {bytes, path} structs)"
    )
    label_column: str = opt("label", "data.source=parquet: the column of integer labels")
    download: bool = opt(False, "let torchvision download cifar10/cifar100/stl10 when missing")
    image_size: int = opt(32, "side of the square training views (images are resized to it)", min=8)
    subset: Optional[int] = opt(None, "use a class-stratified subset of this many training images", min=1)
    cache_dir: Optional[str] = opt(
        "~/.cache/sparsehead",
        "where decoded uint8 copies of image-file and shard data sets and their indexes are cached (null: off)",
    )
    bad_images: Literal["fail", "skip"] = opt(
        "fail", "an unreadable image file or shard record: stop with its name, or skip it and count it"
    )
    storage: Literal["memory", "stream", "auto"] = opt(
        "auto",
        "memory: decode the set once into uint8 at data.image_size; stream: keep only a file index and "
        "decode in DataLoader workers, each view's crop cut from the full-resolution image (image-file and "
        "shard sources: imagefolder, imagenet, imagenet100, tinyimagenet, webdataset, parquet); auto: memory "
        "when the decoded set fits data.memory_budget_gb, else stream",
    )
    memory_budget_gb: float = opt(
        16.0,
        "the most a decoded in-memory data set may take on a node (GB, 1e9 bytes; its processes share one "
        "copy through data.cache_dir, or each holds its own without it)",
        min=0.0,
        exclusive_min=True,
    )
    workers: int = opt(4, "DataLoader worker processes of data.storage=stream (0: decode in the main process)", min=0)
    decode: Literal["workers", "device"] = opt(
        "workers",
        "data.storage=stream: where the training images are decoded. workers: each DataLoader worker decodes "
        "and cuts the views; device: the workers only read the encoded bytes, the training device decodes "
        "each batch whole (nvJPEG on a GPU, on a side stream a batch ahead) and cuts every view straight "
        "from the full-size images (PNG, CMYK and other non-RGB-JPEG records are still decoded by a worker)",
    )
    eval_crop: Optional[float] = opt(
        None,
        "evaluation crop ratio: the shorter side resized to data.image_size / ratio, then the centre "
        "data.image_size square (0.875: ImageNet's Resize(256) + CenterCrop(224)); null: 0.875 for imagenet "
        "and imagenet100, 1.0 (the whole shorter side) for the small-image sources",
        min=0.0,
        max=1.0,
        exclusive_min=True,
    )

    def check(self, check_paths: bool = True) -> None:
        """data.root given where the source reads a folder, and (check_paths) existing or downloadable."""
        reader = sources.SOURCES[self.source].reader  # the embedded set (sklearn) needs no folder
        if reader == "sklearn":
            return
        if not self.root:
            raise ConfigError(
                f"data.root: required for data.source={self.source}; give the data folder, "
                "e.g. data.root=../shared/data/cifar10"
            )
        root = Path(self.root).expanduser()
        downloadable = reader == "torchvision"
        if check_paths and not root.exists() and not (self.download and downloadable):
            hint = " or set data.download=true" if downloadable else ""
            raise ConfigError(f"data.root: folder {root} does not exist; give an existing folder{hint}")


def crop_ratio_of(cfg: DataConfig, split: str) -> float:
    """The centre crop of `split`'s images (data config `cfg`): 1.0 (the whole shorter side, from
    which training draws its random crops) for the pretraining split; data.eval_crop for the
    evaluation splits, by default the source's (ImageNet's 0.875 for the ImageNet folders, 1.0 for
    the small-image sources: digits, CIFAR, STL-10, Tiny ImageNet's 64 px images, an imagefolder)."""
    if split == "pretrain":
        return 1.0
    if cfg.eval_crop is not None:
        return cfg.eval_crop
    return sources.SOURCES[cfg.source].eval_crop
