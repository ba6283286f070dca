"""Data the benchmarks share: where CIFAR-10 is, subsets of an ImageFolder as symlinks, synthetic stand-ins.

Not a benchmark itself (the leading underscore keeps it out of tests/test_benchmarks.py's list).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# An ImageFolder copy of CIFAR-10 (train/ and test/ of <class>/<image>.jpg); tests point it elsewhere.
CIFAR10 = Path(os.environ.get("SPARSEHEAD_CIFAR10", REPO.parent / "shared" / "data" / "cifar10"))


def temp_dir(prefix: str) -> Path:
    """A fresh folder, removed when the script exits (benchmark inputs are rebuilt every run)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def link_subset(src: Path, dest: Path, n: int) -> Path:
    """dest/<class>/ links to the first n / classes images of every class folder of `src`."""
    classes = sorted(p.name for p in src.iterdir() if p.is_dir())
    for c in classes:
        (dest / c).mkdir(parents=True)
        for f in sorted((src / c).iterdir())[: n // len(classes)]:
            (dest / c / f.name).symlink_to(f.resolve())
    return dest


def subset_folder(src: Path, n: int) -> Path:
    """A temporary ImageFolder root whose train/ links n images of `src` (equal per class)."""
    root = temp_dir("sparsehead-bench-") / "data"
    link_subset(src, root / "train", n)
    return root


def synthetic_images(dest: Path, n: int, seed: int = 0) -> Path:
    """dest/class<k>/ filled with n random 32 px JPEGs in 10 classes, where real images are absent."""
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        d = dest / f"class{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        px = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(px).save(d / f"{i}.jpg", quality=90)
    return dest


def toy_cifar10(root: Path, n: int) -> Path:
    """A temporary CIFAR-10-like root, train/ and test/ of about n images each: links to `root`'s
    images where it has them, else synthetic ones (a fresh clone without ../shared/data)."""
    out = temp_dir("sparsehead-bench-toy-")
    for seed, split in enumerate(("train", "test")):
        if (root / split).is_dir():
            link_subset(root / split, out / split, n)
        else:
            synthetic_images(out / split, n, seed)
    return out


def _imagenet_like_jpeg(job: tuple[Path, int, int, int]) -> None:
    path, seed, width, height = job
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width].astype(np.float32)
    smooth = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], 2)
    noisy = smooth + rng.normal(0, 20, (height, width, 3)).astype(np.float32)  # ~90 KB at quality 90
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def imagenet_like_jpegs(dest: Path, n: int, size: tuple[int, int] = (500, 375), workers: int = 1) -> Path:
    """dest/train/class<k>/ filled with n JPEGs of ImageNet's commonest size (500x375, every other one
    portrait) and file size (about 90 KB: gradients and noise), in 10 classes, by `workers` processes."""
    jobs = []
    for i in range(n):
        folder = dest / "train" / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        width, height = size if i % 2 == 0 else size[::-1]
        jobs.append((folder / f"{i}.jpg", i, width, height))
    if workers > 1:
        with get_context("fork").Pool(workers) as pool:
            pool.map(_imagenet_like_jpeg, jobs, chunksize=16)
    else:
        for job in jobs:
            _imagenet_like_jpeg(job)
    return dest
