"""Shards vs the JPEG folder stream: images/s per core streaming the same images from a JPEG folder,
from WebDataset tar shards and from Hugging Face-layout parquet shards (sparsehead's stream, the
workers' part: read, decode and cut two views, uint8), the record index build, the bare record reads
in a shuffled order, the webdataset package's in-order read for comparison, and the peak RSS of a
process streaming one epoch at two set sizes.

    PYTHONPATH=src python benchmarks/shards.py [--images 2000] [--rss-images 2000 8000] [--repeats 3]
    PYTHONPATH=src python benchmarks/shards.py --toy   # every step at toy size, synthetic images

The sets hold the same JPEG bytes (CIFAR-10's train/ images, or synthetic 32 px JPEGs without it): the
folder as links to them, tar shards of 1000 samples (KEY.jpg + KEY.cls), parquet files of 1000 rows
in row groups of 100 (the row group size Hugging Face datasets writes image sets with). One thread, no
DataLoader workers: the numbers are per core.
"""

from __future__ import annotations

import argparse
import io
import platform
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from _data import CIFAR10, link_subset, synthetic_images, temp_dir
from _toy import parse_args

TOY = dict(images=40, rss_images=[20], repeats=1, per_shard=16, batch=8)  # one RSS size: each is 3 new interpreters
KINDS = {"folder": "imagefolder", "tar": "webdataset", "parquet": "parquet"}


def write_sets(root: Path, n: int, per_shard: int) -> Path:
    """root/{folder,tar,parquet} holding the same n images (10 classes, in the folder's order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = CIFAR10 / "train" if (CIFAR10 / "train").is_dir() else synthetic_images(root / "synthetic", n)
    link_subset(source, root / "folder" / "train", n)
    items = [
        (label, f) for label, c in enumerate(sorted((root / "folder" / "train").iterdir())) for f in sorted(c.iterdir())
    ]
    for s in range(0, len(items), per_shard):
        part = items[s : s + per_shard]
        (root / "tar" / "train").mkdir(parents=True, exist_ok=True)
        with tarfile.open(root / "tar" / "train" / f"shard-{s // per_shard:06d}.tar", "w") as tar:
            for label, f in part:
                for ext, raw in (("jpg", f.read_bytes()), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{label}_{f.stem}.{ext}")
                    info.size = len(raw)
                    tar.addfile(info, io.BytesIO(raw))
        table = pa.table(
            {"image": [{"bytes": f.read_bytes(), "path": f.name} for _, f in part], "label": [la for la, _ in part]}
        )
        (root / "parquet" / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "parquet" / "data" / f"train-{s // per_shard:05d}.parquet", row_group_size=100)
    return root


def data_cfg(root: Path, kind: str, cache: Path):
    from sparsehead import config

    args = [f"data.source={KINDS[kind]}", f"data.root={root / kind}", f"data.cache_dir={cache}", "data.workers=0"]
    return config.load(None, [*args, "data.storage=stream", "data.image_size=32"]).data


def stream_epoch(root: Path, kind: str, cache: Path, batch: int) -> tuple[int, float]:
    """(images, seconds) of one shuffled epoch of two 32 px views per image, as the training feed makes them."""
    from sparsehead import config
    from sparsehead.data import stream
    from sparsehead.data.crops import crop_plan

    data = stream.StreamSet.open(data_cfg(root, kind, cache), "pretrain")
    plan = crop_plan(config.load(None, []).augment, 32)
    sampler = DistributedSampler(range(len(data)), num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)
    feed = stream.StreamFeed(data, sampler, batch, plan, 0, 0, torch.device("cpu"))
    start = time.perf_counter()
    seen = sum(len(labels) for _, labels in feed.epoch(0, 0))
    return seen, time.perf_counter() - start


def record_reads(root: Path, kind: str, cache: Path) -> tuple[float, float]:
    """(index build s, bare reads/s in a shuffled order): the bytes only (a folder's: its file read), no decoding."""
    from sparsehead.data import records

    cfg = data_cfg(root, kind, cache)
    cfg.cache_dir = None
    start = time.perf_counter()
    idx = records.index(cfg, "train")
    built = time.perf_counter() - start
    order = np.random.default_rng(0).permutation(len(idx))
    start = time.perf_counter()
    for i in order:
        source = idx.source(int(i))
        if isinstance(source, str):
            Path(source).read_bytes()
    return built, len(idx) / (time.perf_counter() - start)


def webdataset_reads(root: Path) -> float | None:
    """The webdataset package's in-order read of the tar shards (samples/s), bytes only."""
    try:
        import webdataset as wds
    except ImportError:
        return None
    urls = [str(p) for p in sorted((root / "tar" / "train").glob("*.tar"))]
    start = time.perf_counter()
    n = sum(1 for _ in wds.WebDataset(urls, shardshuffle=False, empty_check=False).to_tuple("jpg", "cls"))
    return n / (time.perf_counter() - start)


def rss_mib() -> float:
    """This process's resident memory now (MiB; /proc's VmRSS where there is one, else the peak)."""
    status = Path("/proc/self/status")
    if status.exists():
        return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS")) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(root: Path, kind: str, cache: Path, batch: int) -> tuple[float, float]:
    """(peak RSS, RSS added by the epoch) in MiB of a fresh process streaming one epoch of `kind`."""
    code = (
        "import sys, resource, torch; torch.set_num_threads(1); sys.path.insert(0, 'benchmarks'); import shards; "
        "import pyarrow.parquet, sparsehead.data.stream; before = shards.rss_mib(); "
        f"shards.stream_epoch(shards.Path({str(root)!r}), {kind!r}, shards.Path({str(cache)!r}), {batch}); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, shards.rss_mib() - before)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, added = out.stdout.split()[-2:]
    return float(peak), float(added)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rss-images", type=int, nargs=2, default=[2000, 8000])
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed; the best is kept")
    parser.add_argument("--per-shard", type=int, default=1000, help="samples a tar shard and a parquet file")
    parser.add_argument("--batch", type=int, default=50)
    args = parse_args(parser, TOY, argv)
    torch.set_num_threads(1)
    base = temp_dir("sparsehead-shards-")
    root, cache = write_sets(base / "sets", args.images, args.per_shard), base / "cache"
    print(f"{platform.machine()} {platform.processor() or ''}, one thread; {args.images} images from {CIFAR10}")
    print("| source | stream img/s per core | index build (s) | bare reads/s, shuffled |")
    print("|---|---|---|---|")
    for kind in KINDS:
        stream_epoch(root, kind, cache, args.batch)  # warm: the caches written, the files in the page cache
        rate = max(n / s for n, s in (stream_epoch(root, kind, cache, args.batch) for _ in range(args.repeats)))
        built, reads = record_reads(root, kind, cache)
        print(f"| {kind} | {rate:.0f} | {built:.2f} | {reads:.0f} |")
    wds_rate = webdataset_reads(root)
    if wds_rate is not None:
        print(f"webdataset package, the tar shards in order (no random access): {wds_rate:.0f} samples/s")
    print(
        "| source | " + " | ".join(f"{n} images: peak RSS / added by the epoch (MiB)" for n in args.rss_images) + " |"
    )
    print("|---|---|---|")
    sized = [write_sets(base / f"rss{n}", n, args.per_shard) for n in args.rss_images]
    for kind in KINDS:
        rss = " | ".join("{:.0f} / {:+.1f}".format(*memory(r, kind, base / "cache", args.batch)) for r in sized)
        print(f"| {kind} | {rss} |")


if __name__ == "__main__":
    main()
