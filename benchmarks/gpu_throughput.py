"""GPU throughput against the published GPU numbers, one JSON of results (scripts/gpu_check.sh runs it).

    PYTHONPATH=src python3 benchmarks/gpu_throughput.py --out OUT.json [--data ../shared/data/cifar10/train]
    PYTHONPATH=src python3 benchmarks/gpu_throughput.py --out OUT.json --dry-run   # toy sizes on the CPU
    ... [--regions] [--compile-views]   # + each step per region; the views compiled (augment.compile)

(a) SimCLR, CIFAR ResNet-18 width 64, 32 px, batch 512: sparsehead (uint8 cache on the device,
    batched views, model step) against lightly's documented recipe (SimCLRTransform, torchvision
    ImageFolder, a torch DataLoader of 8 and 16 workers, the same network and loss); end-to-end
    images/s. lightly is skipped (and said so in the JSON) where it is not importable.
(b) Barlow Twins, timm's ViT-S/16 (built directly: sparsehead has no timm backbone yet), two 224 px
    views, batch 256, views made from a uint8 memory cache on the device (256 px images), against
    stable-pretraining's published 870.9 samples/s on one H200 (benchmarks/imagenet10/RESULTS.md).
(c) per model step: FLOPs of one forward + backward (torch.utils.flop_counter.FlopCounterMode),
    the achieved TFLOP/s over the timed step, against the dense bf16 peak (H200 SXM: 989 TFLOP/s,
    NVIDIA's H200 datasheet, 1,979 with 2:4 sparsity), and the data side's share of the step (view
    generation against the model step, timed with CUDA events on the GPU).
(d) `--regions`: each sparsehead step per region (views, forward, backward, optimiser: host issue time,
    GPU time by CUDA events, ops and kernels; benchmarks/_regions.py) and a bf16 GEMM's TFLOP/s on the
    same GPU in the same call, under the key "regions". The views are bf16 where the step is.
The dry run keeps every step and every JSON key at toy size (tiny widths, batch 32, CPU, fp32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import subset_folder, synthetic_images, temp_dir  # noqa: E402
from _regions import StepParts, region_report  # noqa: E402
from sparsehead import config  # noqa: E402
from sparsehead.core.atomic import atomic_write_json  # noqa: E402
from sparsehead.core.precision import autocast, resolve_precision  # noqa: E402
from sparsehead.data import datasets  # noqa: E402
from sparsehead.data.views import ViewGenerator, views_dtype  # noqa: E402
from sparsehead.methods.losses import barlow_twins_loss  # noqa: E402
from sparsehead.runs.model import build_model  # noqa: E402
from throughput import lightly_parts  # noqa: E402  (the CPU benchmark's recipe)

REPO = Path(__file__).resolve().parents[1]
H200_BF16_DENSE_TFLOPS = 989.0
PEAK_SOURCE = "NVIDIA H200 datasheet: 1,979 TFLOP/s bf16 with 2:4 sparsity, half of it dense"
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


def endless(loader):
    while True:
        yield from loader


def report(batch, total, data, model, flops, peak):
    return {
        "img_per_s": batch / total,
        "step_s": total,
        "views_s": data,
        "model_step_s": model,
        "data_share": data / (data + model),
        "model_gflop_per_step": flops / 1e9,
        "model_tflops": flops / model / 1e12,
        "fraction_of_bf16_peak": flops / model / 1e12 / peak,
    }


def simclr(root: Path, sz, device, precision, peak, per_region=False, compile_views=False) -> dict:
    """(a): sparsehead's SimCLR step against lightly's DataLoader recipe on the same network."""
    batch = sz["simclr_batch"]
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
    out = {"sparsehead": report(batch, total, d, m, model_step_flops(step, x1, x2), peak)}
    if per_region:
        out["sparsehead"]["regions"] = regions(
            make, lambda a, b: method(a, b).loss, method.parameters(), sz, device, precision
        )

    try:
        transform, model, loss = lightly_parts(cfg, mean, std)
    except ImportError as e:
        out["lightly"] = {"skipped": f"lightly not importable ({e}); carry its wheel (scripts/gpu_check.sh)"}
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
    out["ratio_sparsehead_over_best_lightly"] = out["sparsehead"]["img_per_s"] / best
    out["target_ratio"] = 2.5
    return out


def barlow_vit(images: torch.Tensor, sz, device, precision, peak, per_region=False, compile_views=False) -> dict:
    """(b): Barlow Twins on timm's ViT-S/16, two views from the uint8 memory cache on the device."""
    import timm

    batch, size = sz["vit_batch"], sz["vit_size"]
    torch.manual_seed(0)
    backbone = timm.create_model("vit_small_patch16_224", num_classes=0, **sz["vit_args"])
    dim = backbone.num_features
    projector = nn.Sequential(
        nn.Linear(dim, 2048),
        nn.BatchNorm1d(2048),
        nn.ReLU(),
        nn.Linear(2048, 2048),
        nn.BatchNorm1d(2048),
        nn.ReLU(),
        nn.Linear(2048, 2048),
    )
    net = nn.Sequential(backbone, projector).to(device)
    cfg = config.load(
        None, ["augment.recipe=byol", f"data.image_size={size}", f"augment.compile={str(compile_views).lower()}"]
    )
    imagenet = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    views = ViewGenerator(cfg.augment, size, *imagenet, dtype=views_dtype(precision, device))
    images = images.to(device)
    gen = torch.Generator(device).manual_seed(0)
    step = optimised_step(net.parameters(), lambda a, b: barlow_twins_loss(net(a), net(b)), precision, device)
    per_epoch = len(images) // batch

    def make(i):
        return views(images[(i % per_epoch) * batch : (i % per_epoch + 1) * batch], gen)

    total, d, m = time_pipeline(make, step, sz["steps"], sz["warmup"], device)
    x1, x2 = make(0)
    out = report(batch, total, d, m, model_step_flops(step, x1, x2), peak)
    if per_region:
        out["regions"] = regions(
            make, lambda a, b: barlow_twins_loss(net(a), net(b)), net.parameters(), sz, device, precision
        )
    out.update(
        published_samples_per_s=PUBLISHED_BARLOW_VIT,
        ratio_over_published=out["img_per_s"] / PUBLISHED_BARLOW_VIT,
        target_ratio=2.0,
        source="uint8 memory cache on the device (streaming not merged)",
    )
    return out


def cache_images(folder: Path, n: int, size: int) -> torch.Tensor:
    """n uint8 images of size x size from an ImageFolder (resized), the (b) part's memory cache."""
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for i, f in enumerate(files):
        img = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
        out[i] = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the JSON of results to write")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10" / "train")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU: every step and JSON key")
    ap.add_argument("--only", choices=["simclr", "barlow_vit"], help="run one part only")
    ap.add_argument("--regions", action="store_true", help="each step per region, and the GEMM ceiling")
    ap.add_argument("--compile-views", action="store_true", help="the views compiled (augment.compile)")
    args = ap.parse_args()
    sz = SIZES[args.dry_run]
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    precision = resolve_precision("auto", device)
    torch.backends.cudnn.benchmark = True
    real = args.data.is_dir() and not args.dry_run
    folder = args.data if real else synthetic_images(temp_dir("sparsehead-gpu-bench-") / "train", sz["images"])
    root = subset_folder(folder, sz["images"])
    results = {
        "machine": {
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "precision": precision,
        },
        "dry_run": args.dry_run,
        "data": f"CIFAR-10 JPEGs from {folder}" if real else "synthetic random JPEGs",
        "bf16_dense_peak_tflops": H200_BF16_DENSE_TFLOPS,
        "peak_source": PEAK_SOURCE,
        "settings": {**sz, "regions": args.regions, "compile_views": args.compile_views},
    }
    if args.only in (None, "simclr"):
        results["simclr_resnet18"] = simclr(
            root, sz, device, precision, H200_BF16_DENSE_TFLOPS, args.regions, args.compile_views
        )
        print(json.dumps(results["simclr_resnet18"], indent=1), flush=True)
    if args.only in (None, "barlow_vit"):
        images = cache_images(root / "train", sz["vit_batch"] * 4, sz["cache_size"])
        results["barlow_twins_vit_s16"] = barlow_vit(
            images, sz, device, precision, H200_BF16_DENSE_TFLOPS, args.regions, args.compile_views
        )
        print(json.dumps(results["barlow_twins_vit_s16"], indent=1), flush=True)
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
