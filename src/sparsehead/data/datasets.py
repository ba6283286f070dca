"""Data sources decoded once into uint8 tensors (N, C, H, W): an epoch never re-decodes a file.

Sources: scikit-learn's digits (embedded, no download), torchvision's CIFAR-10/100 and STL-10,
and any ImageFolder-style folder (root/train/<class>/*, root/test/<class>/*).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F

from sparsehead.core.options import opt
from sparsehead.data import readers, storage
from sparsehead.data.cache import read_cache, write_cache
from sparsehead.data.errors import DataError
from sparsehead.data.readers import IMAGE_SUFFIXES  # noqa: F401  (where callers have always found it)


@dataclass
class DataConfig:
    source: Literal[
        "digits", "cifar10", "cifar100", "stl10", "imagefolder", "imagenet", "imagenet100", "tinyimagenet"
    ] = opt(
        "digits",
        "data set: digits (embedded, scikit-learn), cifar10, cifar100, stl10 (torchvision), "
        "imagefolder (a folder holding train/ and test/ class sub-folders), imagenet (train/<wnid>/*.JPEG, "
        "val/<wnid>/*), imagenet100 (imagenet's folders, CMC's 100 classes) or tinyimagenet (train/<wnid>/images, "
        "val/images + val_annotations.txt)",
    )
    root: Optional[str] = opt(None, "data folder (torchvision sets, imagefolder); unused for digits")
    download: bool = opt(False, "let torchvision download cifar10/cifar100/stl10 when missing")
    image_size: int = opt(32, "side of the square training views (images are resized to it)", min=8)
    subset: Optional[int] = opt(None, "use a class-stratified subset of this many training images", min=1)
    cache_dir: Optional[str] = opt(
        "~/.cache/sparsehead",
        "where decoded uint8 copies of folder data sets and their file indexes are cached (null: off)",
    )
    bad_images: Literal["fail", "skip"] = opt(
        "fail", "an unreadable image in an imagefolder: stop with its path, or skip it and count it"
    )
    storage: Literal["memory", "stream", "auto"] = opt(
        "auto",
        "memory: decode the set once into uint8 at data.image_size; stream: keep only a file index and "
        "decode in DataLoader workers, each view's crop cut from the full-resolution image (folder sources: "
        "imagefolder, imagenet, imagenet100, tinyimagenet); auto: memory when the decoded set fits "
        "data.memory_budget_gb, else stream",
    )
    memory_budget_gb: float = opt(
        16.0, "the most a decoded in-memory data set may take (GB, 1e9 bytes)", min=0.0, exclusive_min=True
    )
    workers: int = opt(4, "DataLoader worker processes of data.storage=stream (0: decode in the main process)", min=0)


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,); -1 where unlabeled
    classes: list[str]
    skipped: int = 0  # unreadable files left out (data.bad_images=skip)

    def __len__(self) -> int:
        return self.images.shape[0]

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] units, for normalising views."""
        x = self.images.float().div_(255).transpose(0, 1).reshape(self.images.shape[1], -1)
        std = x.std(dim=1).clamp_min(1e-3)  # a constant channel (blank digits border) must not divide by 0
        return x.mean(dim=1).tolist(), std.tolist()


def load(cfg: DataConfig, split: str):
    """Load `split` ("pretrain", "train" or "test") of the configured source: an ImageSet decoded in
    memory, or a stream.StreamSet (a file index, decoded batch by batch) as data.storage decides."""
    if split not in ("pretrain", "train", "test"):
        raise ValueError(f"split must be pretrain, train or test, not {split!r}")
    if storage.choose(cfg, split) == "stream":
        from sparsehead.data.stream import StreamSet

        return StreamSet.open(cfg, split)
    loader = {
        "digits": _digits,
        "cifar10": _cifar,
        "cifar100": _cifar,
        "stl10": _stl10,
        **{name: _imagefolder for name in readers.FOLDER_SOURCES},
    }[cfg.source]
    data = loader(cfg, split)
    if split != "test" and cfg.subset is not None and cfg.subset < len(data):
        data = stratified_subset(data, cfg.subset, seed=0)
    return data


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` sorted indices with the class proportions of `labels`, the same for the same seed."""
    from sklearn.model_selection import train_test_split

    stratify = labels if (labels >= 0).all() and len(np.unique(labels)) <= n else None
    idx, _ = train_test_split(np.arange(len(labels)), train_size=n, random_state=seed, stratify=stratify)
    return np.sort(idx)


def stratified_subset(data: ImageSet, n: int, seed: int) -> ImageSet:
    """`n` samples with the class proportions of `data`, the same for the same seed."""
    idx = torch.as_tensor(stratified_indices(data.labels.numpy(), n, seed))
    return ImageSet(data.images[idx], data.labels[idx], data.classes, data.skipped)


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
# ImageFolder: decoded in parallel once, then kept as a uint8 cache file with a checksum.


def _sniff(raw: bytes) -> Optional[str]:
    """The format TorchCodec decodes, from the file's first bytes; None for any other."""
    if raw[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if raw[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "webp"
    return None


@functools.lru_cache(maxsize=None)
def _torchcodec() -> Optional[dict]:
    """TorchCodec's decoders by format, or None where torchcodec does not import or its libraries
    do not load (a torch it was not built for): Pillow then decodes every format, to the same
    pixels (benchmarks/decode.py checks), only slower."""
    try:
        from torchcodec import decoders

        formats = {
            "jpeg": decoders.decode_jpeg,
            "png": decoders.decode_png,
            "gif": decoders.decode_gif,
            "webp": decoders.decode_webp,
        }
        formats["png"](_as_tensor(_TINY_PNG))  # the compiled decoders load and work
    except Exception:
        return None
    return formats


def decoder_name() -> str:
    """The library decoding JPEG, PNG, WebP and GIF files: "torchcodec" or "pillow"."""
    return "torchcodec" if _torchcodec() is not None else "pillow"


_TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"  # 1x1, red
    "0000000c4944415478da63f8cfc0000003010100f70341430000000049454e44ae426082"
)


def _as_tensor(raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def _read_rgb(path: Path) -> torch.Tensor:
    """An image file as uint8 RGB (3, H, W): grayscale, RGBA (alpha dropped) and palette images are
    converted, 16-bit images keep their high byte, an animated GIF or WebP gives its first frame.
    TorchCodec decodes JPEG/PNG/WebP/GIF; Pillow the other formats (BMP, TIFF, PPM), and all of
    them where TorchCodec is missing."""
    raw = path.read_bytes()
    if not raw:
        raise ValueError("the file is empty")
    fmt = _sniff(raw)
    codecs = _torchcodec() if fmt else None
    if codecs is None:
        return _read_pillow(raw)
    try:
        if fmt == "png":  # "auto": a 16-bit PNG stays uint16 (uint8 would round v / 257)
            img = codecs["png"](_as_tensor(raw), mode="RGB", output_dtype="auto")
        else:
            img = codecs[fmt](_as_tensor(raw), mode="RGB")
    except RuntimeError as err:
        raise RuntimeError(re.sub(r"^[^,]*, \S+:\d+, ", "", str(err))) from None  # drop the C++ location
    img = img[0] if img.ndim == 4 else img  # an animated GIF or WebP: its first frame
    if img.dtype != torch.uint8:  # 16 bits: the high byte, as torchvision's to_dtype(scale=True)
        img = (img.to(torch.int32) >> 8).to(torch.uint8)
    return img  # a (3, H, W) view of (H, W, 3) memory: resizing or stacking copies it once


def _read_pillow(raw: bytes) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as pil:
            if pil.mode.startswith("I;16") or (pil.mode == "I" and pil.format == "PNG"):  # 16-bit grey
                gray = (np.asarray(pil).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
                arr = np.repeat(gray[:, :, None], 3, axis=2)
            else:
                arr = np.array(pil if pil.mode == "RGB" else pil.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError("not an image file that Pillow or TorchCodec can read") from None
    return torch.from_numpy(arr).permute(2, 0, 1)  # a view, as TorchCodec's


def _decode(path: Path, size: int) -> torch.Tensor:
    return _resize_crop(_read_rgb(path), size)


def _resize_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> (3, size, size): the shorter side scaled to `size` (antialiased
    bilinear, up or down, rounded back to uint8), then the centre crop."""
    if img.shape[1:] != (size, size):
        h, w = img.shape[1:]
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        img = (
            F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
        top, left = (nh - size) // 2, (nw - size) // 2
        img = img[:, top : top + size, left : left + size]
    return img


def _cache_key(files: list[Path], size: int, bad_images: str) -> str:
    # bad_images is part of the key: a cache built with "skip" must not hide bad files from "fail"
    # v2 and the decoder: the decoder is part of the cache's content (TorchCodec and Pillow give the
    # same pixels wherever tested, but the key must not promise it). v1: torchvision.io.
    h = hashlib.sha256(f"v2 decoder={decoder_name()} size={size} bad_images={bad_images}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _checksum(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _imagefolder(cfg: DataConfig, split: str) -> ImageSet:
    index = readers.index(cfg, split)
    folder, files = index.root, [Path(p) for p in index.full_paths()]
    labels, classes = index.labels.tolist(), index.classes
    size = cfg.image_size
    cache_path = None
    if cfg.cache_dir:
        cache_path = Path(cfg.cache_dir).expanduser() / f"imagefolder-{_cache_key(files, size, cfg.bad_images)}.pt"
        cached = _read_cache(cache_path)
        if cached is not None:
            return cached

    _torchcodec()  # import and check the decoder once, before the threads

    def decode(path):
        try:
            return _decode(path, size)
        except Exception as err:  # any decoder failure is this file's problem, reported by path
            return err

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoded = list(pool.map(decode, files, chunksize=256))
    bad = [(f, r) for f, r in zip(files, decoded) if isinstance(r, Exception)]
    if bad and cfg.bad_images == "fail":
        listing = "\n".join(f"  {f}: {r}" for f, r in bad[:10])
        raise DataError(
            f"{len(bad)} unreadable image(s) in {folder}:\n{listing}\n"
            "Remove or repair them, or set data.bad_images=skip to leave them out."
        )
    keep = [i for i, r in enumerate(decoded) if not isinstance(r, Exception)]
    if not keep:
        raise DataError(
            f"none of the {len(files)} images in {folder} could be read (first: {bad[0][0]}: "
            f"{bad[0][1]}); check the files"
        )
    for f, r in bad:
        warnings.warn(f"skipping unreadable image {f}: {r}")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) of {len(files)} in {folder} (data.bad_images=skip)")
    data = ImageSet(
        torch.stack([decoded[i] for i in keep]), torch.tensor([labels[i] for i in keep]), classes, skipped=len(bad)
    )
    if cache_path is not None:
        _write_cache(cache_path, data)
    return data


def _read_cache(path: Path) -> Optional[ImageSet]:
    def intact(blob: dict) -> bool:
        if _checksum(blob["images"]) != blob["checksum"]:
            raise ValueError("checksum mismatch")
        return True

    blob = read_cache(path, "data cache", "decoding the images again", intact)
    return (
        None if blob is None else ImageSet(blob["images"], blob["labels"], list(blob["classes"]), int(blob["skipped"]))
    )


def _write_cache(path: Path, data: ImageSet) -> None:
    write_cache(
        path,
        {
            "images": data.images,
            "labels": data.labels,
            "classes": data.classes,
            "skipped": data.skipped,
            "checksum": _checksum(data.images),
        },
        "data cache",
    )
