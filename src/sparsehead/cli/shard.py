"""`sparsehead shard`: write a folder data set as WebDataset tar shards, for clusters."""

from __future__ import annotations

import re

from sparsehead.cli.common import command

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


def size(text: str) -> int:
    """Bytes from 500MB, 1GB, 2GiB, 1e9 or 1000000 (argparse type)."""
    import argparse

    match = re.fullmatch(r"\s*([0-9.E+]+)\s*([KMGT]I?)?B?\s*", text.upper().replace("IB", "I"))
    try:
        value = float(match.group(1)) * _UNITS[match.group(2) or ""] if match else 0
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 500MB, 1GB or 2GiB")
    return int(value)


def add(sub):
    from sparsehead.data import sources

    p = command(
        sub,
        "shard",
        "write a folder data set as WebDataset tar shards (convert once, train from the shards)",
        "Read a folder source (" + ", ".join(sources.FOLDER_SOURCES) + ") and write OUT/train/train-NNNNNN.tar "
        "and OUT/val/val-NNNNNN.tar (its test/val split): each sample KEY.<jpg|png|webp> (the file's bytes, not "
        "re-encoded) and KEY.cls (its label, the index of its class folder among train/'s), in a shuffled "
        "order fixed by --seed, and OUT/shards.json last (class names, counts per split and class, each "
        "shard's samples and sha256). Train from them with data.source=webdataset data.root=OUT. A "
        "conversion that was stopped continues when the same command runs again.",
        "  sparsehead shard /scratch/imagenet-shards data.source=imagenet data.root=/data/imagenet\n"
        "  sparsehead shard shards/c10 data.source=imagefolder data.root=data/cifar10 --shard-size 5000",
        "Without --shard-size and --shard-bytes a shard is closed at 10000 samples or 1 GB, whichever comes first.",
    )
    p.add_argument("out", metavar="OUT", help="the folder to write (new or empty, or a stopped conversion's)")
    p.add_argument("overrides", nargs="+", metavar="data.KEY=VALUE", help="the data set: data.source, data.root")
    p.add_argument("--shard-size", type=int, metavar="N", help="samples a shard holds (the last one: fewer)")
    p.add_argument("--shard-bytes", type=size, metavar="SIZE", help="the most bytes a shard takes, e.g. 500MB, 1GiB")
    p.add_argument("--splits", default="train,test", help="which splits: train, test (or val), comma-separated")
    p.add_argument("--seed", type=int, default=0, help="the seed of the samples' shuffled order (default 0)")
    p.add_argument("--threads", type=int, default=8, help="threads reading the image files (default 8)")
    p.add_argument("--force", action="store_true", help="replace the shards of another conversion in OUT")
    p.set_defaults(run=run)


def _splits(text: str) -> tuple[str, ...]:
    from sparsehead.core.errors import ConfigError

    names = {"train": "train", "test": "test", "val": "test"}
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in names]
    if unknown or not chosen:
        raise ConfigError(
            f"--splits {text!r}: expected train, test (or val), comma-separated, e.g. --splits train,test"
        )
    return tuple(dict.fromkeys(names[s] for s in chosen))


def run(args) -> int:
    from sparsehead import config
    from sparsehead.core.errors import ConfigError
    from sparsehead.data.shard_writer import write_shards
    from sparsehead.data.tar_writer import Limits

    other = [text for text in args.overrides if not text.startswith("data.")]
    if other:
        raise ConfigError(f"{other[0]!r}: shard takes data.KEY=VALUE only, e.g. data.source=imagenet data.root=DIR")
    if args.shard_size is not None and args.shard_size < 1 or args.threads < 1:
        raise ConfigError("--shard-size and --threads: expected a whole number of at least 1")
    data = config.load(None, args.overrides).data
    if data.subset is not None:
        raise ConfigError("data.subset: shard writes every image of a split; give data.subset when training instead")
    both = args.shard_size is None and args.shard_bytes is None
    limits = Limits(10_000, 10**9) if both else Limits(args.shard_size, args.shard_bytes)
    index = write_shards(data, args.out, limits, _splits(args.splits), args.seed, args.threads, args.force)
    for name, split in index["splits"].items():
        print(f"{name}: {split['samples']} images in {len(split['shards'])} shard(s) under {args.out}/{name}/")
    print(
        f"{len(index['classes'])} classes; index {args.out}/shards.json. Train from the shards with "
        f"data.source=webdataset data.root={args.out}"
    )
    return 0
