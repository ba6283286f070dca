"""Image decoding speed per core: torchvision.io vs Pillow vs TorchCodec, side by side.

    PYTHONPATH=src python benchmarks/decode.py [--cifar ../shared/data/cifar10] [--n-cifar 2000]
        [--large-dir /tmp/sparsehead-decode-bench] [--n-large 100] [--repeats 5] [--size 32]
    PYTHONPATH=src python benchmarks/decode.py --toy   # a few images of each set, files in a temporary folder

Three sets of encoded files, read into memory first (the timings are decoding, not disk):
  cifar-jpeg  every k-th JPEG of <cifar>/train (32x32);
  large-jpeg  400x300 JPEGs (quality 90) and
  large-png   the same pictures as PNGs (Pillow's default compression), made once in --large-dir
              from CIFAR-10 test images: upscaled (bicubic) plus a little Gaussian noise, so that
              they compress like photographs rather than like flat upscaled blurs. Without the
              CIFAR folder, synthetic pictures (gradients plus noise) are used.

Decoders, each turning encoded bytes into a uint8 RGB (3, H, W) tensor (all of them a view of
(H, W, 3) memory, as sparsehead keeps it until resizing or stacking copies it):
  torchvision  torchvision.io.decode_image(mode=RGB) (deprecated since torchvision 0.29);
  pillow       PIL.Image.open + convert("RGB") where the mode is not RGB, then a tensor;
  torchcodec   torchcodec.decoders.decode_jpeg / decode_png(mode="RGB"), as sparsehead calls them,
               and "torchcodec decode_image", which first sniffs the format (in Python), when
               torchcodec imports.
A second table times the whole per-image cache build of sparsehead's imagefolder source on the
large sets: decode, then shorter side to --size (antialiased bilinear) and centre crop
(sparsehead.data.decode.resize_crop), with "pillow+draft" added for JPEG: Image.draft asks
libjpeg for a DCT-scaled decode (1/2, 1/4 or 1/8) no smaller than the target.

One thread (torch.set_num_threads(1)): the numbers are per core. All (set, decoder) pairs take
turns, --repeats rounds, the order rotated every round; the median pass is kept. The output is
also checked: each decoder's pixels against torchvision's.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _data import CIFAR10, temp_dir, toy_cifar10
from _toy import parse_args

LARGE_W, LARGE_H = 400, 300
TOY = dict(n_cifar=20, n_large=2, repeats=2)


# ----------------------------------------------------------------------------------------------
# Inputs


def cifar_files(root: Path, n: int) -> list[Path]:
    files = sorted((root / "train").rglob("*.jpg"))
    if not files:
        return []
    step = max(1, len(files) // n)
    return files[::step][:n]


def make_large(folder: Path, n: int, cifar: Path) -> None:
    """n large JPEGs and PNGs of the same pictures in folder/{jpeg,png}, made once (deterministic)."""
    done = folder / f"done-{n}"
    if done.is_file():
        return
    (folder / "jpeg").mkdir(parents=True, exist_ok=True)
    (folder / "png").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sources = sorted((cifar / "test").rglob("*.jpg"))
    sources = sources[:: max(1, len(sources) // n)][:n] if sources else []
    for i in range(n):
        if sources:
            with Image.open(sources[i]) as im:
                base = np.asarray(im.convert("RGB").resize((LARGE_W, LARGE_H), Image.BICUBIC), np.float32)
        else:  # no CIFAR: a smooth random colour field
            yy, xx = np.mgrid[0:LARGE_H, 0:LARGE_W] / max(LARGE_W, LARGE_H)
            c = rng.uniform(0, 255, (3, 3))
            base = np.stack([c[k, 0] + (c[k, 1] - c[k, 0]) * xx + (c[k, 2] - c[k, 0]) * yy for k in range(3)], -1)
        pic = Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
        pic.save(folder / "jpeg" / f"{i:04d}.jpg", quality=90)
        pic.save(folder / "png" / f"{i:04d}.png")
    done.write_text("ok\n")


# ----------------------------------------------------------------------------------------------
# Decoders: bytes -> uint8 (3, H, W)


def decoders() -> tuple[dict, dict]:
    found, missing = {}, {}
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as tv_decode

    def torchvision_decode(raw: bytes) -> torch.Tensor:
        return tv_decode(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=ImageReadMode.RGB)

    found["torchvision"] = torchvision_decode

    def pillow_decode(raw: bytes) -> torch.Tensor:
        with Image.open(io.BytesIO(raw)) as im:
            if im.mode != "RGB":
                im = im.convert("RGB")
            return torch.from_numpy(np.array(im)).permute(2, 0, 1)

    found["pillow"] = pillow_decode

    try:
        from torchcodec.decoders import decode_image as tc_decode
        from torchcodec.decoders import decode_jpeg, decode_png

        def torchcodec_decode(raw: bytes) -> torch.Tensor:  # as sparsehead calls it: the format's own decoder
            t = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            return decode_jpeg(t, mode="RGB") if raw[:3] == b"\xff\xd8\xff" else decode_png(t, mode="RGB")

        def torchcodec_decode_image(raw: bytes) -> torch.Tensor:  # sniffs the format in Python first
            return tc_decode(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode="RGB")

        torchcodec_decode(_tiny_jpeg())  # its libraries load and decode
        found["torchcodec"] = torchcodec_decode
        found["torchcodec decode_image"] = torchcodec_decode_image
    except Exception as err:  # not installed, or its libraries do not load
        missing["torchcodec"] = f"{type(err).__name__}: {err}"
    return found, missing


def pillow_draft(size: int):
    def decode(raw: bytes) -> torch.Tensor:
        with Image.open(io.BytesIO(raw)) as im:
            im.draft("RGB", (size, size))  # DCT-scaled decode, never smaller than size x size
            if im.mode != "RGB":
                im = im.convert("RGB")
            return torch.from_numpy(np.array(im)).permute(2, 0, 1)

    return decode


def _tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "JPEG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Timing


def time_pass(fn, raws: list[bytes]) -> float:
    start = time.perf_counter()
    for raw in raws:
        fn(raw)
    return time.perf_counter() - start


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    flags = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        cpu = info.get("Model name", cpu).strip()
        have = set(info.get("Flags", "").split())
        flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in have)
    except (OSError, subprocess.SubprocessError):
        pass
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.machine()} {cpu} ({flags}), {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}; load average {load}"
    )


def versions() -> str:
    import PIL
    import torchvision
    from PIL import features

    out = [
        f"torch {torch.__version__}",
        f"torchvision {torchvision.__version__}",
        f"Pillow {PIL.__version__} (libjpeg-turbo {features.version('libjpeg_turbo')}, "
        f"zlib {features.version('zlib')})",
    ]
    try:
        import torchcodec

        out.append(f"torchcodec {torchcodec.__version__}")
    except Exception:
        out.append("torchcodec: not importable")
    return ", ".join(out)


def table(title: str, rows: dict, base: str) -> None:
    sets = list(rows)
    names = list(dict.fromkeys(name for s in sets for name in rows[s]))
    print(f"\n{title}\n")
    print(
        "| decoder | "
        + " | ".join(f"{s} img/s" for s in sets)
        + " | "
        + " | ".join(f"{s} / {base}" for s in sets)
        + " |"
    )
    print("|---" * (1 + 2 * len(sets)) + "|")
    for name in names:
        speed = [rows[s].get(name) for s in sets]
        ratio = [rows[s][name] / rows[s][base] if name in rows[s] and base in rows[s] else None for s in sets]
        print(
            f"| {name} | "
            + " | ".join(f"{v:,.0f}" if v else "-" for v in speed)
            + " | "
            + " | ".join(f"{r:.2f}x" if r else "-" for r in ratio)
            + " |"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--cifar",
        type=Path,
        default=CIFAR10,
        help="CIFAR-10 ImageFolder; --toy: a few of its images, synthetic ones where absent",
    )
    ap.add_argument("--n-cifar", type=int, default=2000)
    ap.add_argument(
        "--large-dir",
        type=Path,
        help="where the large pictures are made once (default /tmp/sparsehead-decode-bench; --toy: a temporary folder)",
    )
    ap.add_argument("--n-large", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=32, help="target side of the cache-build table")
    args = parse_args(ap, TOY, argv)
    if args.toy:
        args.cifar = toy_cifar10(args.cifar, args.n_cifar)
    if args.large_dir is None:
        args.large_dir = temp_dir("sparsehead-decode-bench-") if args.toy else Path("/tmp/sparsehead-decode-bench")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")

    make_large(args.large_dir, args.n_large, args.cifar)
    sets = {}
    cifar = cifar_files(args.cifar, args.n_cifar)
    if cifar:
        sets["cifar-jpeg"] = [f.read_bytes() for f in cifar]
    else:
        print(f"(no CIFAR-10 JPEGs under {args.cifar}/train: the cifar-jpeg column is left out)")
    sets["large-jpeg"] = [f.read_bytes() for f in sorted((args.large_dir / "jpeg").glob("*.jpg"))[: args.n_large]]
    sets["large-png"] = [f.read_bytes() for f in sorted((args.large_dir / "png").glob("*.png"))[: args.n_large]]

    found, missing = decoders()
    from sparsehead.data.decode import resize_crop

    size = args.size
    jobs = {}  # (table, set, decoder) -> fn over one image
    for s in sets:
        for name, fn in found.items():
            jobs[("decode", s, name)] = fn
    for s in ("large-jpeg", "large-png"):
        cache = dict(found)
        if s == "large-jpeg":
            cache["pillow+draft"] = pillow_draft(size)
        for name, fn in cache.items():
            jobs[("cache", s, name)] = (lambda f: lambda raw: resize_crop(f(raw), size))(fn)

    # same pixels as torchvision?
    print(
        "\nPixels against torchvision (|difference| in uint8 levels over the set, the largest and the "
        f"mean; decode at full size, cache build at {size}x{size}):"
    )
    for (kind, s, name), fn in jobs.items():
        if name == "torchvision":
            continue
        ref = jobs[(kind, s, "torchvision")]
        diffs = [(fn(r).int() - ref(r).int()).abs() for r in sets[s]]
        worst, mean = max(int(d.max()) for d in diffs), statistics.fmean(float(d.float().mean()) for d in diffs)
        print(f"  {kind:6s} {s:10s} {name:24s} max {worst:3d}, mean {mean:.3f}")

    times = {key: [] for key in jobs}
    keys = list(jobs)
    for rep in range(args.repeats):
        shift = rep % len(keys)
        for key in keys[shift:] + keys[:shift]:
            times[key].append(time_pass(jobs[key], sets[key[1]]))

    speed = {key: len(sets[key[1]]) / statistics.median(t) for key, t in times.items()}
    print(f"\nmachine: {machine()}")
    print(f"versions: {versions()}")
    for name, why in missing.items():
        print(f"{name}: not measured ({why})")
    print(
        "images: "
        + ", ".join(f"{s} {len(r)} ({sum(map(len, r)) / len(r) / 1024:.1f} KiB each)" for s, r in sets.items())
        + f"; one thread, median of {args.repeats} interleaved passes"
    )
    decode_rows = {s: {n: v for (k, s2, n), v in speed.items() if k == "decode" and s2 == s} for s in sets}
    table("Decode to uint8 RGB (3, H, W), images/s per core:", decode_rows, "torchvision")
    cache_rows = {
        s: {n: v for (k, s2, n), v in speed.items() if k == "cache" and s2 == s} for s in ("large-jpeg", "large-png")
    }
    table(
        f"Cache build per image (decode + shorter side to {size} + centre crop), images/s per core:",
        cache_rows,
        "torchvision",
    )


if __name__ == "__main__":
    sys.exit(main())
