"""Data the benchmarks share: where CIFAR-10 is, subsets of an ImageFolder as symlinks, synthetic stand-ins.

Not a benchmark itself (the leading underscore keeps it out of tests/test_benchmarks.py's list).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

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
