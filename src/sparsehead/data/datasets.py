"""Data sources decoded once into uint8 tensors (N, C, H, W): an epoch never re-decodes a file.

Sources: scikit-learn's digits (embedded, no download), torchvision's CIFAR-10/100 and STL-10,
and the sources read record by record (records.py): any ImageFolder-style folder
(root/train/<class>/*, root/test/<class>/*), the ImageNet layouts, WebDataset and parquet shards.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sparsehead.data import records, settings, sources, storage, subsets
from sparsehead.data.cache import building, read_cache, write_cache
from sparsehead.data.decode import decode_resized, decoder_name, torchcodec_decoders
from sparsehead.data.errors import DataError
from sparsehead.data.evalset import EvalBatches
from sparsehead.data.image_check import report_bad
from sparsehead.data.settings import DataConfig
from sparsehead.data.stream import StreamSet


@dataclass
class ImageSet(EvalBatches):
    """A data set decoded into memory (evalset.EvalSet: what evaluation reads of it)."""

    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,); -1 where unlabeled
    classes: list[str]
    skipped: int = 0  # unreadable files left out (data.bad_images=skip)
    names: Optional[list[str]] = None  # each image's file relative to the split's folder (file sources)
    crop_ratio: float = 1.0  # the centre crop the images were decoded with (settings.crop_ratio_of())

    def __len__(self) -> int:
        return self.images.shape[0]

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] units, for normalising views."""
        x = self.images.float().div_(255).transpose(0, 1).reshape(self.images.shape[1], -1)
        std = x.std(dim=1).clamp_min(1e-3)  # a constant channel (blank digits border) must not divide by 0
        return x.mean(dim=1).tolist(), std.tolist()

    @property
    def item_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def fingerprint(self) -> str:
        """A short hash of the pixels and labels: equal only for the same images in order."""
        h = hashlib.sha256(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy())
        h.update(self.labels.contiguous().numpy())
        return h.hexdigest()[:16]

    def eval_plan(self, plan):
        """The stored images (already resized and centre-cropped when decoded), one batch per index list."""
        for idx in plan:
            yield self.images[torch.as_tensor(idx, dtype=torch.long)]


def load(cfg: DataConfig, split: str):
    """Load `split` ("pretrain", "train" or "test") of the configured source: an ImageSet decoded in
    memory, or a stream.StreamSet (a file index, decoded batch by batch) as data.storage decides."""
    if split not in ("pretrain", "train", "test"):
        raise ValueError(f"split must be pretrain, train or test, not {split!r}")
    if cfg.eval_crop is not None and cfg.source not in sources.RECORD_SOURCES:
        raise DataError(
            f"data.eval_crop={cfg.eval_crop}: the crop ratio applies to images decoded from files "
            f"({', '.join(sources.RECORD_SOURCES)}); data.source={cfg.source} is evaluated on whole images: "
            "drop data.eval_crop"
        )
    if storage.choose(cfg, split) == "stream":
        return StreamSet.open(cfg, split)
    loader = _records if cfg.source in sources.RECORD_SOURCES else MEMORY_LOADERS[cfg.source]
    data = loader(cfg, split)
    if (keep := subsets.subset_indices(cfg, split, data.labels.numpy())) is not None:
        data = _select(data, torch.as_tensor(keep))
    return data


def _select(data: ImageSet, idx: torch.Tensor) -> ImageSet:
    names = None if data.names is None else [data.names[i] for i in idx.tolist()]
    return ImageSet(data.images[idx], data.labels[idx], data.classes, data.skipped, names, data.crop_ratio)


def _digits(cfg: DataConfig, split: str) -> ImageSet:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # pixel values 0..16
    train_idx, test_idx = train_test_split(np.arange(len(x)), test_size=0.2, random_state=0, stratify=digits.target)
    idx = np.sort(test_idx if split == "test" else train_idx)
    images = torch.from_numpy(x[idx]).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()  # gray -> RGB
    return ImageSet(images, torch.from_numpy(digits.target[idx]).long(), [str(i) for i in range(10)])


def _torchvision_error(cfg: DataConfig, err: Exception) -> DataError:
    return DataError(
        f"{cfg.source} files not found under data.root={cfg.root} ({err}). Put the "
        f"torchvision copy of {cfg.source} there, or set data.download=true on a machine "
        "with internet access."
    )


def _cifar(cfg: DataConfig, split: str) -> ImageSet:
    from torchvision import datasets

    cls = datasets.CIFAR10 if cfg.source == "cifar10" else datasets.CIFAR100
    try:
        ds = cls(str(Path(cfg.root).expanduser()), train=split != "test", download=cfg.download)
    except RuntimeError as err:
        raise _torchvision_error(cfg, err) from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.as_tensor(ds.targets, dtype=torch.long), list(ds.classes))


def _stl10(cfg: DataConfig, split: str) -> ImageSet:
    from torchvision import datasets

    tv_split = {"pretrain": "train+unlabeled", "train": "train", "test": "test"}[split]
    try:
        ds = datasets.STL10(str(Path(cfg.root).expanduser()), split=tv_split, download=cfg.download)
    except RuntimeError as err:
        raise _torchvision_error(cfg, err) from None
    return ImageSet(torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long(), list(ds.classes))


# ----------------------------------------------------------------------------------------------
# Image files and shards: decoded in parallel once (data/decode.py), then kept as a uint8 cache file with a checksum.


def _cache_key(index: records.Records, size: int, ratio: float, bad_images: str) -> str:
    # bad_images is part of the key: a cache built with "skip" must not hide bad files from "fail"
    # The decoder is part of the cache's content (TorchCodec and Pillow give the same pixels wherever
    # tested, but the key must not promise it). v3: torchvision's resize and crop rounding and the
    # crop ratio; v2: the decoder named; v1: torchvision.io. v4: records by name and their files' stamps.
    h = hashlib.sha256(
        f"v4 decoder={decoder_name()} size={size} crop={ratio} bad_images={bad_images} {index.where}".encode()
    )
    h.update("\n".join(index.paths).encode())
    h.update(np.ascontiguousarray(index.labels, dtype=np.int64).tobytes())
    h.update(index.stamps().numpy().tobytes())
    return h.hexdigest()[:24]


def _checksum(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy()).hexdigest()  # read in place: no copy of a mapped set


def _records(cfg: DataConfig, split: str) -> ImageSet:
    index = records.index(cfg, split)
    size, ratio = cfg.image_size, settings.crop_ratio_of(cfg, split)
    if not cfg.cache_dir:
        return _decode_records(index, size, ratio, cfg.bad_images)
    key = _cache_key(index, size, ratio, cfg.bad_images)
    cache_path = Path(cfg.cache_dir).expanduser() / f"imagefolder-{key}.pt"
    with building(cache_path):  # the processes of a node: the first decodes, the others map its file
        data = _read_cache(cache_path)
        if data is None:
            decoded = _decode_records(index, size, ratio, cfg.bad_images)
            _write_cache(cache_path, decoded)
            data = _read_cache(cache_path)  # mapped, as the others will map it
            if data is None:  # the cache could not be written: this process keeps its own copy
                return decoded
    data.crop_ratio = ratio
    return data


def _decode_records(index: records.Records, size: int, ratio: float, bad_images: str) -> ImageSet:
    labels, classes = index.labels.tolist(), index.classes
    torchcodec_decoders()  # import and check the decoder once, before the threads

    def decode(i):
        source = index.source(i)
        try:
            return decode_resized(source if isinstance(source, bytes) else Path(source), size, ratio)
        except Exception as err:  # any decoder failure is this image's problem, reported by name
            return err

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # in order: a shard's records read together
        decoded = list(pool.map(decode, range(len(index)), chunksize=256))
    bad = [(index.name(i), r) for i, r in enumerate(decoded) if isinstance(r, Exception)]
    keep = [i for i, r in enumerate(decoded) if not isinstance(r, Exception)]
    report_bad(bad, len(index), index.where, bad_images)
    return ImageSet(
        torch.stack([decoded[i] for i in keep]),
        torch.tensor([labels[i] for i in keep]),
        classes,
        skipped=len(bad),
        names=[index.paths[i] for i in keep],
        crop_ratio=ratio,
    )


def _read_cache(path: Path) -> Optional[ImageSet]:
    def intact(blob: dict) -> bool:
        if _checksum(blob["images"]) != blob["checksum"]:
            raise ValueError("checksum mismatch")
        return "names" in blob  # a cache written before the file names were kept is out of date

    blob = read_cache(path, "data cache", "decoding the images again", intact, mapped=True)
    return (
        None
        if blob is None
        else ImageSet(blob["images"], blob["labels"], list(blob["classes"]), int(blob["skipped"]), blob["names"])
    )


def _write_cache(path: Path, data: ImageSet) -> None:
    write_cache(
        path,
        {
            "images": data.images,
            "labels": data.labels,
            "classes": data.classes,
            "skipped": data.skipped,
            "names": data.names,
            "checksum": _checksum(data.images),
        },
        "data cache",
    )


# The sources not read from image files (sources.SOURCES: sklearn, torchvision), by name.
MEMORY_LOADERS = {"digits": _digits, "cifar10": _cifar, "cifar100": _cifar, "stl10": _stl10}
