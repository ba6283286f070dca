"""data.storage=stream, data side only: images/s per core making two 224 px SimCLR views ready for the
model (decode + crop + all augmentation), sparsehead stream vs torchvision ImageFolder + a per-image v2
recipe vs lightly's SimCLRTransform, each best over num_workers 1 and 2; and the file index time for
fabricated paths.

    python benchmarks/stream.py --images 2000 --index-paths 1300000   (files generated once in /tmp/stream-bench)
    python benchmarks/stream.py --toy   # every step at toy size, files in a temporary folder
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from _data import temp_dir
from _toy import parse_args

TOY = dict(images=8, batch=4, index_paths=1000, workers="1")


def generate(folder: Path, n: int) -> None:
    """n synthetic JPEGs of 300-500 px in 10 classes (smooth gradients + noise, ImageNet-like sizes)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / "train" / f"c{i % 10}" / f"{i}.jpg"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in rng.integers(300, 501, 2))
        y, x = np.mgrid[:h, :w]
        img = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)], 2) + rng.normal(0, 20, (h, w, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def rate(loader, n_images: int, finish=lambda b: b) -> float:
    start = time.perf_counter()
    for batch in loader:
        finish(batch)
    return n_images / (time.perf_counter() - start)


def sparsehead_stream(root: Path, workers: int, batch: int, augment: bool) -> float:
    """augment=False: the workers' part only (decode + both crops, uint8), the batched ops left to the
    device; True: the batched ops run here too, on this CPU (one thread), where a GPU would run them."""
    from sparsehead import config
    from sparsehead.data import datasets
    from sparsehead.data.stream import StreamFeed
    from sparsehead.data.views import ViewGenerator

    cfg = config.load(
        None,
        [
            f"data.root={root}",
            "data.source=imagefolder",
            "data.storage=stream",
            "data.cache_dir=null",
            "data.image_size=224",
            f"data.workers={workers}",
            "augment.recipe=simclr",
        ],
    )
    data = datasets.load(cfg.data, "pretrain")
    views = ViewGenerator(cfg.augment, 224, [0.5] * 3, [0.25] * 3)
    sampler = DistributedSampler(range(len(data)), num_replicas=1, rank=0, drop_last=True)
    feed = StreamFeed(data, sampler, batch, views.plan, cfg.train.seed, cfg.data.workers, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    finish = (lambda b: views(b[0], gen)) if augment else (lambda b: b)
    return rate(feed.epoch(0, 0), len(sampler) // batch * batch, finish)


def per_image(root: Path, workers: int, batch: int, transform) -> float:
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(root / "train"), transform=transform)
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, drop_last=True)
    return rate(loader, len(ds) // batch * batch)


def torchvision_recipe():
    from torchvision.transforms import v2

    one = v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(224, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5] * 3, [0.25] * 3),
        ]
    )
    return lambda img: (one(img), one(img))


def lightly_recipe():
    from lightly.transforms import SimCLRTransform

    return SimCLRTransform(input_size=224, gaussian_blur=0.0)


def index_time(n_paths: int) -> float:
    from sparsehead import config
    from sparsehead.data import readers

    with tempfile.TemporaryDirectory() as tmp:
        for c in range(1000):
            d = Path(tmp) / "train" / f"n{c:08d}"
            d.mkdir(parents=True)
            for i in range(n_paths // 1000):
                (d / f"n{c:08d}_{i}.JPEG").touch()
        cfg = config.load(None, [f"data.root={tmp}", "data.source=imagenet", "data.cache_dir=null"]).data
        start = time.perf_counter()
        idx = readers.index(cfg, "train")
        took = time.perf_counter() - start
        assert len(idx) == n_paths // 1000 * 1000
    return took


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=2000)
    p.add_argument(
        "--folder", help="where the images are generated once (default /tmp/stream-bench; --toy: a temporary folder)"
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--index-paths", type=int, default=1_300_000)
    p.add_argument("--workers", default="1,2")
    args = parse_args(p, TOY)
    torch.set_num_threads(1)
    root = Path(args.folder) if args.folder else temp_dir("stream-bench-") if args.toy else Path("/tmp/stream-bench")
    generate(root, args.images)
    workers, b = [int(w) for w in args.workers.split(",")], args.batch

    def per_core(measure, main_process_cores=0):  # best over the worker counts
        return max(measure(w) / (w + main_process_cores) for w in workers)

    # per core: the workers, plus the main process where it augments on the CPU
    results = {
        "sparsehead stream, workers (ops on device)": per_core(lambda w: sparsehead_stream(root, w, b, False)),
        "sparsehead stream, ops on this CPU": per_core(lambda w: sparsehead_stream(root, w, b, True), 1),
        "torchvision v2 per image": per_core(lambda w: per_image(root, w, b, torchvision_recipe())),
        "lightly SimCLRTransform": per_core(lambda w: per_image(root, w, b, lightly_recipe())),
    }
    base = results["lightly SimCLRTransform"]
    for name, r in results.items():
        print(f"{name:44s} {r:8.1f} images/s per core  ({r / base:.2f}x lightly)")
    if args.index_paths:
        print(f"file index of {args.index_paths} fabricated paths: {index_time(args.index_paths):.2f} s")


if __name__ == "__main__":
    main()
