"""The device bundle (`make device-bundle`): what a lent GPU machine lacks, in one ignored folder that a
device `run` carries (docs/gpu.md), so that scripts/device_session.sh spends the machine on measuring.

    python3 scripts/device_bundle.py [--out .device] [--data ../shared/data/cifar10]
    python3 scripts/device_bundle.py --toy 128 --out DIR   # synthetic data, no wheels: the CPU dry run's

Writes OUT/wheels/ (WHEELS, for the machine's Python 3.12 on x86-64 Linux) and OUT/cifar10.tar.gz
(cifar10/train and cifar10/test of the data folder, gzip: the 60,000 JPEGs' shared headers compress,
57 MB of files to about 20 MB; the tar is unpacked there in seconds). Prints the sizes and fails when
the bundle and the working tree that travels with it exceed the device tool's 64 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPARSEHEAD_CIFAR10", REPO.parent / "shared" / "data" / "cifar10"))
# The device machine (KINDS.md) has torch 2.11, torchvision 0.26, timm, numpy, tqdm, pytorch-lightning,
# Pillow and pyarrow, not these:
# - lightly 1.6.0 (the `bench` extra's pin): part (a)'s reference. Of its Requires-Dist (hydra-core,
#   numpy, tqdm, torch, torchvision, pytorch_lightning) the machine lacks hydra-core alone, which only
#   lightly's command line and lightly.embedding import, not the loss, heads and transforms the
#   benchmark uses; its antlr4-python3-runtime==4.9.* has no wheel to carry anyway.
# - torchcodec 0.17.0 (the version `make test` runs; no Requires-Dist): sparsehead's JPEG decoder,
#   3.4x Pillow's speed on CIFAR's JPEGs (docs/performance.md); Pillow decodes where it does not load.
WHEELS = ("lightly==1.6.0", "torchcodec==0.17.0")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
LIMIT = 64 * 2**20  # what one device `run` carries: the working tree, untracked files and carried paths


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def download_wheels(dest: Path) -> None:
    """WHEELS into dest (replacing what it held), with pip's ordinary client; a clear exit where it fails."""
    tmp = Path(tempfile.mkdtemp(prefix="device-wheels-", dir=dest.parent))
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    cmd += ["--implementation", "cp", *platforms, "-d", str(tmp), *WHEELS]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(tmp)
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-4:])
        sys.exit(
            f"device-bundle: pip could not download {' '.join(WHEELS)} (no package index reachable?):\n{tail}\n"
            "The device machine reaches no network: run make device-bundle where pip reaches an index."
        )
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def pack_data(data: Path, dest: Path) -> None:
    """data/train and data/test as dest (cifar10/train/..., cifar10/test/...): sorted, owner and times
    zeroed, so the same images give the same bytes."""
    missing = [s for s in ("train", "test") if not (data / s).is_dir()]
    if missing:
        sys.exit(
            f"device-bundle: {data} has no {' or '.join(missing)}/ folder; give the CIFAR-10 ImageFolder copy (--data)"
        )

    def zeroed(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    part = dest.with_suffix(".part")
    with tarfile.open(part, "w:gz", compresslevel=6) as tar:
        for split in ("train", "test"):
            for path in sorted((data / split).rglob("*")):
                tar.add(path, f"cifar10/{path.relative_to(data)}", recursive=False, filter=zeroed)
    part.rename(dest)


def toy_data(n: int) -> Path:
    """A CIFAR-like folder of n synthetic 32 px JPEGs per split (benchmarks/_data.py)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _data import synthetic_images, temp_dir

    root = temp_dir("device-bundle-toy-")
    for seed, split in enumerate(("train", "test")):
        synthetic_images(root / split, n, seed)
    return root


def travelling_tree() -> int:
    """Bytes of the working tree a `run` sends: tracked and untracked-not-ignored files, and shared/."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True
    ).stdout.split(b"\0")
    files = {REPO / os.fsdecode(f) for f in listed if f}
    total = sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())
    return total + (size_of(REPO / "shared") if (REPO / "shared").is_dir() else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / ".device")
    ap.add_argument("--data", type=Path, default=DATA, help="CIFAR-10 as an ImageFolder: train/ and test/")
    ap.add_argument("--toy", type=int, metavar="N", help="N synthetic images a split and no wheels (the dry run)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.toy:
        shutil.rmtree(args.out / "wheels", ignore_errors=True)
        pack_data(toy_data(args.toy), args.out / "cifar10.tar.gz")
    else:
        download_wheels(args.out / "wheels")
        pack_data(args.data, args.out / "cifar10.tar.gz")
    wheels = size_of(args.out / "wheels") if (args.out / "wheels").is_dir() else 0
    data = size_of(args.out / "cifar10.tar.gz")
    print(f"device bundle {args.out}: wheels {mib(wheels)}, data {mib(data)}")
    if not args.out.resolve().is_relative_to(REPO):
        return  # a toy bundle for the dry run: it never travels
    tree = travelling_tree()
    total = wheels + data + tree
    print(f"with the working tree that travels ({mib(tree)}): {mib(total)} of the {mib(LIMIT)} a device run carries")
    if total > LIMIT:
        sys.exit(f"device-bundle: {mib(total)} exceeds the {mib(LIMIT)} a device run carries; carry less")


if __name__ == "__main__":
    main()
