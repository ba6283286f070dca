"""GPU throughput against lightly and the published GPU numbers: one JSON per part (scripts/gpu_check.sh runs it).

    PYTHONPATH=src python3 benchmarks/gpu_throughput.py --out-dir OUT [--data ../shared/data/cifar10/train]
    PYTHONPATH=src python3 benchmarks/gpu_throughput.py --out-dir OUT --dry-run   # toy sizes on the CPU
    ... [--parts simclr,vit,stream] [--regions] [--compile-views] [--stream-data data.decode=device ...]

(a) SimCLR, CIFAR ResNet-18 width 64, 32 px, batch 512: sparsehead against lightly's documented recipe
    (SimCLRTransform, torchvision ImageFolder, a torch DataLoader of 8 and 16 workers, the same network
    and loss); end-to-end images/s. sparsehead twice: its training step as `sparsehead pretrain` takes it
    (configs/gpu_cifar10_simclr.yaml through training.setup and train_step, benchmarks/_train_step.py; in
    each of `--step-variants`: eager, compile, graphs), whose best gives `ratio_sparsehead_over_best_lightly`,
    and the bare step of the first GPU run (uint8 cache on the device, batched views, forward, backward,
    Adam), `ratio_bare_step_over_best_lightly`, split into its parts by (c) and (d). lightly is skipped
    (and said so in the JSON, the ratios null) where it is not importable.
(b) sparsehead's Barlow Twins on timm's ViT-S/16 (model.backbone=timm:...; both views one forward), two 224 px
    views, batch 256, views made from a uint8 memory cache on the device (256 px images), against
    stable-pretraining's published 870.9 samples/s on one H200 (benchmarks/imagenet10/RESULTS.md);
    its model step's `fraction_of_bf16_peak`.
(c) per model step of (a) and (b): FLOPs of one forward + backward (torch.utils.flop_counter.FlopCounterMode),
    the achieved TFLOP/s over the timed step, against the GPU model's dense bf16 peak (BF16_DENSE_PEAKS;
    null for a GPU not listed), and the data side's share of the step (view generation against the
    model step, timed with CUDA events on the GPU).
(d) `--regions`: each sparsehead step of (a) and (b) per region (views, forward, backward, optimiser:
    host issue time, GPU time by CUDA events, ops and kernels; benchmarks/_regions.py) and a bf16 GEMM's
    TFLOP/s on the same GPU in the same call, under the key "regions". The views are bf16 where the step is.
(e) ImageNet-size JPEGs streamed from files: synthetic 500x375 JPEGs (about 90 KB, written here
    first), data.source=imagefolder with data.storage=stream (DataLoader workers decode and cut the
    crops, the device makes the views), SimCLR on ResNet-50 at 224 px, batch 256: the step fed by the
    stream against the same step fed one batch held in memory; `exposed_data_share` = (fed - held) /
    fed, and the stream alone's images/s. `--stream-data` adds data options (data.KEY=VALUE) to the
    stream's config, e.g. another decoder.
Each part writes OUT/throughput_<part>_<gpu>_torch<version>_<date>.json (part: simclr, vit, stream;
stream-<options> under --stream-data) as soon as it is done, each with the machine (GPU, torch, CUDA),
the date and the settings.
The dry run keeps every step and every JSON key at toy size (tiny widths and batches, CPU, fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import imagenet_like_jpegs, subset_folder, synthetic_images, temp_dir  # noqa: E402
from _regions import StepParts, region_report  # noqa: E402
from _train_step import give_an_evaluation_split, parse_variants, train_step_rates  # noqa: E402
from sparsehead import config  # noqa: E402
from sparsehead.core.atomic import atomic_write_json  # noqa: E402
from sparsehead.core.precision import autocast, resolve_precision  # noqa: E402
from sparsehead.data import datasets  # noqa: E402
from sparsehead.data.feed import open_feed  # noqa: E402
from sparsehead.data.views import ViewGenerator, views_dtype  # noqa: E402
from sparsehead.runs.model import build_model  # noqa: E402
from throughput import lightly_parts  # noqa: E402  (the CPU benchmark's recipe)

REPO = Path(__file__).resolve().parents[1]
# Dense bf16 tensor-core peaks, TFLOP/s: NVIDIA's datasheets give the rate with 2:4 sparsity, the dense
# one is half of it. H100 datasheet (nvidia.com/en-us/data-center/h100): SXM 1,979 -> 989, PCIe
# 1,513 -> 756; H200 datasheet (nvidia.com/en-us/data-center/h200): SXM 1,979 -> 989. The pattern is
# matched against torch.cuda.get_device_name() (an H100 SXM reads "NVIDIA H100 80GB HBM3"); the NVL
# boards (other clocks) and every other GPU are not listed: their peak is null, not guessed.
BF16_DENSE_PEAKS = (
    (r"H100 (80GB HBM3|SXM)", 989.0, "NVIDIA H100 datasheet, SXM: 1,979 TFLOP/s bf16 with 2:4 sparsity, half dense"),
    (r"H100 PCIe", 756.0, "NVIDIA H100 datasheet, PCIe: 1,513 TFLOP/s bf16 with 2:4 sparsity, half dense"),
    (r"H200(?! NVL)", 989.0, "NVIDIA H200 datasheet, SXM: 1,979 TFLOP/s bf16 with 2:4 sparsity, half dense"),
)
PUBLISHED_BARLOW_VIT = 870.9  # stable-pretraining benchmarks/imagenet10/RESULTS.md, one H200
SIZES = {  # full: the settings; dry: the same steps at toy size on the CPU
    False: dict(
        simclr_width=64,
        simclr_batch=512,
        vit_batch=256,
        vit_size=224,
        cache_size=256,
        vit_args={},
        steps=20,
        warmup=3,
        workers=[8, 16],
        images=10240,
        gemm_size=8192,
        stream_batch=256,
        stream_size=224,
        stream_width=64,
        stream_workers=min(16, os.cpu_count() or 1),
        stream_warmup=8,  # the workers' first batches arrive together: a step per worker or so
        stream_jpeg=(500, 375),
    ),
    True: dict(
        simclr_width=4,
        simclr_batch=32,
        vit_batch=32,
        vit_size=32,
        cache_size=36,
        vit_args={"img_size": 32, "depth": 1},
        steps=4,
        warmup=1,
        workers=[0],
        images=128,
        gemm_size=64,
        stream_batch=4,
        stream_size=32,
        stream_width=4,
        stream_workers=1,
        stream_warmup=1,
        stream_jpeg=(40, 30),
    ),
}


class Timer:
    """Elapsed seconds of a region: CUDA events on the GPU (no sync inside the region), else wall time."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def seconds(self, a, b) -> float:
        if self.cuda:
            b.synchronize()
            return a.elapsed_time(b) / 1000
        return b - a


def model_step_flops(step_fn, x1, x2) -> float:
    with FlopCounterMode(display=False) as counter:
        step_fn(x1, x2)
    return counter.get_total_flops()


def time_pipeline(make_views, model_step, steps, warmup, device):
    """Median seconds of the whole step, of its views and of its model part, over `steps` steps."""
    timer, total, data, model = Timer(device), [], [], []
    for i in range(warmup + steps):
        t0 = timer.mark()
        x1, x2 = make_views(i)
        t1 = timer.mark()
        model_step(x1, x2)
        t2 = timer.mark()
        if i >= warmup:
            total.append(timer.seconds(t0, t2))
            data.append(timer.seconds(t0, t1))
            model.append(timer.seconds(t1, t2))
    med = statistics.median
    return med(total), med(data), med(model)


def optimised_step(params, loss_fn, precision, device):
    opt = torch.optim.Adam(params, lr=1e-3)

    def step(x1, x2):
        with autocast(precision, device):
            loss = loss_fn(x1, x2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def regions(make_views, loss_fn, params, sz, device, precision) -> dict:
    """The step of optimised_step, timed per region (benchmarks/_regions.py), with its own Adam."""

    def loss(views):
        with autocast(precision, device):
            return loss_fn(*views)

    opt = torch.optim.Adam(params, lr=1e-3)
    return region_report(StepParts(make_views, loss, opt), device, sz["steps"], sz["warmup"], sz["gemm_size"])


def best_rate(rates: dict) -> float:
    """The best images/s of the training step's variants that ran (0 when none did)."""
    return max((r["img_per_s"] for r in rates.values() if "img_per_s" in r), default=0.0)


def endless(loader):
    while True:
        yield from loader


def bf16_peak(device_name: str) -> tuple[float | None, str]:
    """The GPU model's dense bf16 peak (TFLOP/s) and its source; None where the model is not listed."""
    for pattern, tflops, source in BF16_DENSE_PEAKS:
        if re.search(pattern, device_name):
            return tflops, source
    return None, f"unknown: {device_name!r} is not in BF16_DENSE_PEAKS (benchmarks/gpu_throughput.py)"


def report(batch, total, data, model, flops, peak):
    return {
        "img_per_s": batch / total,
        "step_s": total,
        "views_s": data,
        "model_step_s": model,
        "data_share": data / (data + model),
        "model_gflop_per_step": flops / 1e9,
        "model_tflops": flops / model / 1e12,
        "fraction_of_bf16_peak": flops / model / 1e12 / peak if peak else None,
    }


def simclr(root: Path, sz, device, precision, peak, per_region=False, compile_views=False, variants=()) -> dict:
    """(a): sparsehead's SimCLR step against lightly's DataLoader recipe on the same network: the training
    step `sparsehead pretrain` takes (configs/gpu_cifar10_simclr.yaml, in each variant of the speed options),
    and the bare step (views, forward, backward, Adam) the first GPU run measured, split into its parts."""
    batch = sz["simclr_batch"]
    give_an_evaluation_split(root)
    train_step = train_step_rates(
        "gpu_cifar10_simclr",
        [
            f"data.root={root}",
            f"data.cache_dir={root.parent / 'cache'}",
            f"model.width={sz['simclr_width']}",
            f"train.batch_size={batch}",
            f"train.precision={precision}",
            f"train.device={device.type}",
            f"augment.compile={str(compile_views).lower()}",
        ],
        variants,
        sz["steps"],
        sz["warmup"],
    )
    cfg = config.load(
        None,
        [
            "data.source=imagefolder",
            f"data.root={root}",
            "data.image_size=32",
            f"data.cache_dir={root.parent / 'cache'}",
            f"model.width={sz['simclr_width']}",
            f"train.batch_size={batch}",
            "method.name=simclr",
            "optim.name=adam",
            f"augment.compile={str(compile_views).lower()}",
        ],
    )
    data = datasets.load(cfg.data, "pretrain")
    mean, std = data.channel_stats()
    views = ViewGenerator(cfg.augment, 32, mean, std, torch.channels_last, views_dtype(precision, device))
    images = data.images.to(device)
    gen = torch.Generator(device).manual_seed(0)
    order = torch.randperm(len(images), device=device)
    torch.manual_seed(0)
    method = build_model(cfg).to(device, memory_format=torch.channels_last)
    step = optimised_step(method.parameters(), lambda a, b: method(a, b).loss, precision, device)
    per_epoch = len(images) // batch

    def make(i):
        return views(images[order[(i % per_epoch) * batch : (i % per_epoch + 1) * batch]], gen)

    total, d, m = time_pipeline(make, step, sz["steps"], sz["warmup"], device)
    x1, x2 = make(0)
    out = {"sparsehead": report(batch, total, d, m, model_step_flops(step, x1, x2), peak), "train_step": train_step}
    if per_region:
        out["sparsehead"]["regions"] = regions(
            make, lambda a, b: method(a, b).loss, method.parameters(), sz, device, precision
        )

    try:
        transform, model, loss = lightly_parts(cfg, mean, std)
    except ImportError as e:
        out["lightly"] = {"skipped": f"lightly not importable ({e}); carry its wheel (make device-bundle)"}
        out["ratio_sparsehead_over_best_lightly"] = out["ratio_bare_step_over_best_lightly"] = None
        return out
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    model = model.to(device, memory_format=torch.channels_last)
    dataset = ImageFolder(str(root / "train"), transform=transform)
    lightly = {}
    for w in sz["workers"]:
        lstep = optimised_step(model.parameters(), lambda a, b: loss(model(a), model(b)), precision, device)
        loader = DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=w,
            pin_memory=device.type == "cuda",
            persistent_workers=w > 0,
        )
        batches = endless(loader)  # the timed steps may outnumber one epoch's batches
        times = []
        for i in range(sz["warmup"] + sz["steps"]):
            t0 = time.perf_counter()
            (x1, x2), _ = next(batches)
            lstep(
                x1.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last),
                x2.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last),
            )
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= sz["warmup"]:
                times.append(time.perf_counter() - t0)
        del batches, loader
        lightly[f"workers_{w}"] = {"img_per_s": batch / statistics.median(times)}
    best = max(v["img_per_s"] for v in lightly.values())
    out["lightly"] = lightly
    out["ratio_sparsehead_over_best_lightly"] = best_rate(out["train_step"]) / best or None  # None: no variant ran
    out["ratio_bare_step_over_best_lightly"] = out["sparsehead"]["img_per_s"] / best
    out["target_ratio"] = 2.0  # issue 36
    return out


def barlow_vit(images: torch.Tensor, sz, device, precision, peak, per_region=False, compile_views=False) -> dict:
    """(b): sparsehead's Barlow Twins on timm's ViT-S/16 (model.backbone=timm:vit_small_patch16_224, a 3-layer
    2048-d head: the method's own forward, both views through the ViT as one batch), two views from the uint8
    memory cache on the device."""
    batch, size = sz["vit_batch"], sz["vit_size"]
    cfg = config.load(
        None,
        [
            "method.name=barlow_twins",
            "model.backbone=timm:vit_small_patch16_224",
            *[f"model.timm_args.{key}={value}" for key, value in sz["vit_args"].items()],
            "head.hidden_dim=2048",
            "head.out_dim=2048",
            "head.num_layers=3",
            "augment.recipe=byol",
            f"data.image_size={size}",
            f"augment.compile={str(compile_views).lower()}",
        ],
    )
    torch.manual_seed(0)
    method = build_model(cfg).to(device)
    imagenet = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    views = ViewGenerator(cfg.augment, size, *imagenet, dtype=views_dtype(precision, device))
    images = images.to(device)
    gen = torch.Generator(device).manual_seed(0)
    step = optimised_step(method.parameters(), lambda a, b: method(a, b).loss, precision, device)
    per_epoch = len(images) // batch

    def make(i):
        return views(images[(i % per_epoch) * batch : (i % per_epoch + 1) * batch], gen)

    total, d, m = time_pipeline(make, step, sz["steps"], sz["warmup"], device)
    x1, x2 = make(0)
    out = report(batch, total, d, m, model_step_flops(step, x1, x2), peak)
    if per_region:
        out["regions"] = regions(make, lambda a, b: method(a, b).loss, method.parameters(), sz, device, precision)
    out.update(
        published_samples_per_s=PUBLISHED_BARLOW_VIT,
        ratio_over_published=out["img_per_s"] / PUBLISHED_BARLOW_VIT,
        target_ratio=2.0,
        target_fraction_of_bf16_peak=0.30,  # issue 36
        source="uint8 memory cache on the device",
    )
    return out


def wall_per_step(make_views, model_step, steps, warmup, device) -> float:
    """Mean wall seconds per step over `steps` steps after `warmup`, synchronised only at both ends:
    the host waiting on its data shows, the GPU's own queue does not."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for i in range(warmup):
        model_step(*make_views(i))
    sync()
    start = time.perf_counter()
    for i in range(steps):
        model_step(*make_views(warmup + i))
    sync()
    return (time.perf_counter() - start) / steps


def streamed_jpegs(root: Path, sz, device, precision, data_options: list[str]) -> dict:
    """(e): SimCLR on ResNet-50 fed by data.storage=stream from the JPEG files under root/train, against
    the same step fed one batch held in memory; `data_options` (data.KEY=VALUE) go into the config last."""
    batch, size = sz["stream_batch"], sz["stream_size"]
    cfg = config.load(
        None,
        [
            "data.source=imagefolder",
            f"data.root={root}",
            "data.storage=stream",
            "data.cache_dir=null",
            f"data.image_size={size}",
            f"data.workers={sz['stream_workers']}",
            "augment.recipe=simclr",
            "method.name=simclr",
            "model.backbone=resnet50",
            f"model.width={sz['stream_width']}",
            f"train.batch_size={batch}",
            "optim.name=adam",
            *data_options,
        ],
    )
    data = datasets.load(cfg.data, "pretrain")
    mean, std = data.channel_stats()
    views = ViewGenerator(cfg.augment, size, mean, std, torch.channels_last, views_dtype(precision, device))
    gen = torch.Generator(device).manual_seed(0)
    torch.manual_seed(0)
    method = build_model(cfg).to(device, memory_format=torch.channels_last)
    step = optimised_step(method.parameters(), lambda a, b: method(a, b).loss, precision, device)
    sampler = torch.utils.data.DistributedSampler(range(len(data)), num_replicas=1, rank=0, drop_last=True)
    feed = open_feed(data, sampler, batch, views.plan, cfg.train.seed, cfg.data.workers, device)

    def batches(epoch):
        return (crops.to(device, non_blocking=True) for crops, _ in feed.epoch(epoch, 0))

    held = next(batches(1))
    steps, warmup = sz["steps"], sz["stream_warmup"]
    held_s = wall_per_step(lambda i: views(held, gen), step, steps, sz["warmup"], device)
    stream = batches(0)  # a fresh pass: the workers start now, their queue empty
    fed_s = wall_per_step(lambda i: views(next(stream), gen), step, steps, warmup, device)
    stream = batches(2)  # the stream alone (decode, cut, copy), past the workers' first batches
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    for _ in range(steps):
        next(stream)
    alone_s = (time.perf_counter() - start) / steps
    exposed = max(0.0, fed_s - held_s)
    return {
        "img_per_s": batch / fed_s,
        "step_s": fed_s,
        "step_held_batch_s": held_s,
        "exposed_data_s": exposed,
        "exposed_data_share": exposed / fed_s,
        "target_exposed_data_share": 0.10,  # issue 36: under 10% of the step
        "stream_alone_img_per_s": batch / alone_s,
        "images": len(data),
        "data_options": list(data_options),
        "workers": cfg.data.workers,
    }


def cache_images(folder: Path, n: int, size: int) -> torch.Tensor:
    """n uint8 images of size x size from an ImageFolder (resized), the (b) part's memory cache."""
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for i, f in enumerate(files):
        img = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
        out[i] = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)
    return out


PARTS = ("simclr", "vit", "stream")


def slug(text: str) -> str:
    """text as a file-name part: lower case, runs of anything but letters, digits and dots as one '-'."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def machine(device: torch.device, precision: str) -> dict:
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "precision": precision,
        "cpus": os.cpu_count(),
    }


def part_path(out_dir: Path, part: str, header: dict) -> Path:
    """OUT/throughput_<part>_<gpu>_torch<version>_<date>.json, e.g.
    throughput_vit_h100-80gb-hbm3_torch2.11.0-cu130_2026-12-07.json."""
    gpu = slug(header["machine"]["device"].removeprefix("NVIDIA "))
    return out_dir / f"throughput_{part}_{gpu}_torch{slug(header['machine']['torch'])}_{header['date']}.json"


def write_part(out_dir: Path, part: str, header: dict, result: dict) -> None:
    path = part_path(out_dir, part, header)
    atomic_write_json(path, {"part": part, **header, **result})
    print(json.dumps(result, indent=1), f"\nwrote {path}", flush=True)


def parse_parts(text: str) -> list[str]:
    parts = [p for p in text.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"--parts {text!r}: give a comma-separated subset of {','.join(PARTS)}")
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, required=True, help="the folder of the parts' JSONs")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10" / "train")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU: every step and JSON key")
    ap.add_argument("--parts", type=parse_parts, default=list(PARTS), help=f"comma-separated, of {','.join(PARTS)}")
    ap.add_argument("--regions", action="store_true", help="each step per region, and the GEMM ceiling")
    ap.add_argument("--compile-views", action="store_true", help="the views compiled (augment.compile)")
    ap.add_argument(
        "--step-variants",
        type=parse_variants,
        default=None,
        help="(a)'s training step in these variants of the speed options, comma-separated, of eager,compile,graphs "
        "(default: eager,graphs; the dry run: eager)",
    )
    ap.add_argument(
        "--stream-data", nargs="*", default=[], metavar="data.KEY=VALUE", help="more data options for part (e)"
    )
    args = ap.parse_args()
    bad = [o for o in args.stream_data if not re.fullmatch(r"data\.\w+=.*", o)]
    if bad:
        ap.error(f"--stream-data {bad[0]!r}: each option is data.KEY=VALUE, e.g. data.workers=8")
    sz = SIZES[args.dry_run]
    stream_root = None
    if "stream" in args.parts:  # before CUDA starts: the writers are forked processes
        n = sz["stream_batch"] * (sz["stream_warmup"] + sz["steps"])
        writers = 1 if args.dry_run else os.cpu_count()
        stream_root = imagenet_like_jpegs(temp_dir("sparsehead-gpu-stream-"), n, sz["stream_jpeg"], writers)
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    precision = resolve_precision("auto", device)
    torch.backends.cudnn.benchmark = True
    real = args.data.is_dir() and not args.dry_run
    folder = args.data if real else synthetic_images(temp_dir("sparsehead-gpu-bench-") / "train", sz["images"])
    root = subset_folder(folder, sz["images"])
    header = {
        "machine": machine(device, precision),
        "date": datetime.now(timezone.utc).date().isoformat(),
        "dry_run": args.dry_run,
        "data": f"CIFAR-10 JPEGs from {folder}" if real else "synthetic random JPEGs",
        "settings": {**sz, "regions": args.regions, "compile_views": args.compile_views},
    }
    peak, source = bf16_peak(header["machine"]["device"])
    header.update(bf16_dense_peak_tflops=peak, peak_source=source)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if "simclr" in args.parts:
        variants = args.step_variants or (["eager"] if args.dry_run else ["eager", "graphs"])
        result = simclr(root, sz, device, precision, peak, args.regions, args.compile_views, variants)
        write_part(args.out_dir, "simclr", header, result)
    if "vit" in args.parts:
        images = cache_images(root / "train", sz["vit_batch"] * 4, sz["cache_size"])
        result = barlow_vit(images, sz, device, precision, peak, args.regions, args.compile_views)
        write_part(args.out_dir, "vit", header, result)
    if stream_root is not None:
        result = streamed_jpegs(stream_root, sz, device, precision, args.stream_data)
        w, h = sz["stream_jpeg"]
        stream_header = {**header, "data": f"{result['images']} synthetic {w}x{h} JPEGs (and portrait), streamed"}
        variant = slug("-".join(args.stream_data))  # other data options: a file of their own beside the default's
        write_part(args.out_dir, f"stream-{variant}" if variant else "stream", stream_header, result)


if __name__ == "__main__":
    main()
