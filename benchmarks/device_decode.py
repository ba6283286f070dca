"""data.decode=workers vs data.decode=device (data.storage=stream) at ImageNet-like sizes: decode images/s,
and the data time a training step waits for (exposed data ms per step).

    PYTHONPATH=src python benchmarks/device_decode.py [--images 640] [--batch 64] [--workers 2] [--steps 6]
        [--device cpu|cuda] [--model sleep|resnet50] [--step-ms 200] [--json out.json]
    PYTHONPATH=src python benchmarks/device_decode.py --toy   # seconds: a few small batches

Inputs: --images synthetic JPEGs of about 500 x 375 (each side 0.8-1.2x of it, gradients plus noise,
quality 90, ImageNet's kind of file), an ImageFolder made once in --folder.

1. Decode, images/s. workers: what a worker does for one image (stream.cut_views: the JPEG decoded at
   the reduced DCT scale its crops allow, SimCLR's two 224 px views cut and resized), one image after
   another in this process, times --workers. device: device_decode.decode_batch of whole batches of
   bytes held in memory, on --device (synchronised), plus the views' crop-and-resize of those batches.
2. Exposed data, ms per step: --steps steps (after --warmup) of a training loop over the real feed
   (stream.StreamFeed or device_decode.DeviceDecodeFeed with --workers DataLoader workers), each step the
   views of its batch (ViewGenerator, SimCLR's two 224 px views) and a model step: `sleep` (the host idle
   for --step-ms while a device computes: the CPU's stand-in for a GPU step) or `resnet50` (forward and
   backward in bf16, channels_last, on CUDA). The same loop over one batch already on the device is the
   step without data: exposed = (loop - resident) / steps, and its share of the loop's step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from _data import temp_dir
from _toy import parse_args

TOY = dict(images=12, batch=4, workers=1, steps=1, warmup=1, step_ms=5.0, size=64)
MODES = ("workers", "device")


def generate(folder: Path, n: int) -> None:
    """n JPEGs of about 500 x 375 in 10 classes, made once (deterministic)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / "train" / f"c{i % 10}" / f"{i}.jpg"
        w, h = (int(v) for v in rng.uniform(0.8, 1.2, 2) * (500, 375))
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        y, x = np.mgrid[:h, :w]
        img = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)], 2) + rng.normal(0, 20, (h, w, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def stream_set(root: Path, mode: str, workers: int, size: int):
    from sparsehead import config
    from sparsehead.data import datasets

    overrides = [f"data.root={root}", "data.source=imagefolder", "data.storage=stream", "data.cache_dir=null"]
    overrides += [f"data.image_size={size}", f"data.workers={workers}", f"data.decode={mode}", "augment.recipe=simclr"]
    cfg = config.load(None, overrides)
    return cfg, datasets.load(cfg.data, "pretrain")


def views_of(cfg, size: int, device: torch.device):
    from sparsehead.data.views import ViewGenerator

    return ViewGenerator(cfg.augment, size, [0.5] * 3, [0.25] * 3, torch.channels_last)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_rates(root: Path, args, device: torch.device) -> dict:
    """Images/s of each mode's decode (section 1 of the docstring)."""
    from sparsehead.data import device_decode, stream
    from sparsehead.data.crops import CROP_COLUMNS

    cfg, data = stream_set(root, "device", 0, args.size)
    plan, n = views_of(cfg, args.size, device).plan, len(data)
    start, one_worker = time.perf_counter(), min(n, 4 * args.batch)  # a worker's rate: a few batches' worth
    for i in range(one_worker):
        stream.cut_views(data.index.source(i), plan, torch.Generator().manual_seed(i))
    workers = one_worker / (time.perf_counter() - start) * args.workers
    raws = [device_decode.payload(data.index.source(i), "") for i in range(n - n % args.batch)]
    batches = [raws[b : b + args.batch] for b in range(0, len(raws), args.batch)]
    device_decode.decode_batch(batches[0], device, str)  # warm-up: the decoder loaded
    sync(device)
    start = time.perf_counter()
    decoded = [device_decode.decode_batch(b, device, str) for b in batches]
    sync(device)
    took = time.perf_counter() - start
    u = torch.rand(2, args.batch, CROP_COLUMNS, device=device)
    start = time.perf_counter()
    for images in decoded:
        images.cut(range(2), plan[0], u)
    sync(device)
    cut = (time.perf_counter() - start) / len(decoded) * 1e3
    return {"workers img/s": workers, "device img/s": len(raws) / took, "device crop ms/batch": cut}


def model_step(kind: str, step_ms: float, device: torch.device):
    if kind == "sleep":
        return lambda views: time.sleep(step_ms / 1e3)
    from torchvision.models import resnet50

    net = resnet50().to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step(views):
        with torch.autocast(device.type, torch.bfloat16):
            loss = net(torch.cat(views)).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def loop_ms(batches, views, step, device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """ms per step of `steps` steps after `warmup` (views + model step of each batch), and of it the ms the
    host waited for the next batch."""
    gen, batches, waited = torch.Generator(device).manual_seed(0), iter(batches), 0.0
    for k in range(warmup + steps):
        if k == warmup:
            sync(device)
            start, waited = time.perf_counter(), 0.0
        asked = time.perf_counter()
        images, _ = next(batches)
        waited += time.perf_counter() - asked
        step(views(images.to(device, non_blocking=True), gen))
    sync(device)
    return (time.perf_counter() - start) / steps * 1e3, waited / steps * 1e3


def exposed(root: Path, mode: str, args, device: torch.device, step) -> dict:
    """Section 2 of the docstring for one mode."""
    from sparsehead.data.feed import open_feed

    cfg, data = stream_set(root, mode, args.workers, args.size)
    views = views_of(cfg, args.size, device)
    sampler = DistributedSampler(range(len(data)), num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)
    feed = open_feed(data, sampler, args.batch, views.plan, 0, args.workers, device)
    batches = feed.epoch(0, 0)
    streamed, waited = loop_ms(batches, views, step, device, args.warmup, args.steps)
    batches.close()
    batches = feed.epoch(1, 0)
    images, labels = next(batches)
    batches.close()
    resident = [(images.to(device), labels)] * (args.warmup + args.steps)  # already on the device
    alone, _ = loop_ms(resident, views, step, device, args.warmup, args.steps)
    exposed_ms = max(streamed - alone, 0.0)
    return {"step ms": streamed, "resident step ms": alone, "exposed data ms": exposed_ms, "wait ms": waited}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=640)
    ap.add_argument("--folder", help="where the JPEGs are made once (default /tmp/device-decode-bench)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--size", type=int, default=224, help="side of the views")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", choices=("sleep", "resnet50"), help="default: resnet50 on CUDA, sleep on the CPU")
    ap.add_argument("--step-ms", type=float, default=200.0, help="the sleep model's step")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = parse_args(ap, TOY, argv)
    device = torch.device(args.device)
    kind = args.model or ("resnet50" if device.type == "cuda" else "sleep")
    root = (
        Path(args.folder)
        if args.folder
        else temp_dir("device-decode-")
        if args.toy
        else Path("/tmp/device-decode-bench")
    )
    need = (args.warmup + args.steps + 1) * args.batch
    if args.images < need:
        ap.error(f"--images {args.images}: the loop needs at least (warmup + steps + 1) x batch = {need}")
    generate(root, args.images)
    torch.backends.cudnn.benchmark = True

    rates = decode_rates(root, args, device)
    step = model_step(kind, args.step_ms, device)
    results = {mode: exposed(root, mode, args, device, step) for mode in MODES}
    for mode in MODES:
        r = results[mode]
        r["exposed data share"] = r["exposed data ms"] / r["step ms"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, model {kind}, batch {args.batch}, ", end="")
    print(f"{args.workers} workers, {args.steps} steps")
    print(f"decode images/s: workers (decode + 2 crops, x{args.workers}) {rates['workers img/s']:,.0f}, ", end="")
    print(f"device (batch decode) {rates['device img/s']:,.0f}; ", end="")
    print(f"device crop-and-resize of 2 views {rates['device crop ms/batch']:.1f} ms/batch")
    print("| data.decode | step ms | step without data ms | exposed data ms | exposed share | host wait ms |")
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        r = results[mode]
        print(f"| {mode} | {r['step ms']:.1f} | {r['resident step ms']:.1f} | {r['exposed data ms']:.1f} | "
              f"{r['exposed data share']:.1%} | {r['wait ms']:.1f} |")  # fmt: skip
    if args.json:
        best = min(MODES, key=lambda m: results[m]["exposed data share"])
        out = {"machine": name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d", time.gmtime())}
        out |= {"model": kind, "batch": args.batch, "workers": args.workers, "steps": args.steps, **rates}
        out |= {"modes": results, "exposed_data_share": results[best]["exposed data share"], "best_decode": best}
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
