"""Step time of multi-crop SwAV with the crops run one by one through the backbone vs batched by
resolution (Method.encode_crops, one forward per size as SwAV's code), as a ratio from one run.

    PYTHONPATH=src python benchmarks/multicrop.py [--batch 256] [--size 32] [--local-size 16]
        [--width 16] [--steps 5] [--repeats 3] [--threads 2] [--device cpu]
    PYTHONPATH=src python benchmarks/multicrop.py --toy   # every step at toy size, in seconds

SwAV (300 prototypes, head 512 -> 128) on a CIFAR ResNet-18 of width `--width` (narrow, so a CPU
runs the issue's shape: 2 x 32 px + 6 x 16 px crops, batch 256), Adam, channels_last as training
runs it; `--device cuda` times it on a GPU (synchronised around each step). The crops are fixed
random tensors (the views are not what changes). Each round times one warm-up step then `--steps`
steps of each variant in turn; the median over all rounds is kept.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _toy import parse_args
from sparsehead import config
from sparsehead.runs.model import build_model
from sparsehead.training.optim import build_optimizer

GLOBAL_CROPS, LOCAL_CROPS = 2, 6
TOY = dict(batch=8, size=16, local_size=8, width=4, steps=1, repeats=1, threads=1)


def make_method(args, batched: bool):
    """SwAV and its optimiser, from the same seed for both variants."""
    cfg = config.load(
        None,
        [
            f"data.image_size={args.size}",
            "model.backbone=resnet18",
            f"model.width={args.width}",
            "head.hidden_dim=512",
            "head.out_dim=128",
            "method.name=swav",
            f"augment.local_crops={LOCAL_CROPS}",
            f"augment.local_size={args.local_size}",
            f"train.batch_size={args.batch}",
        ],
    )
    torch.manual_seed(0)
    method = build_model(cfg).to(args.device, memory_format=torch.channels_last).train()
    optimizer = build_optimizer(cfg.optim, method, args.batch)
    return (method if batched else per_crop(method)), optimizer


def per_crop(method):
    """The loop before batching by resolution: every crop through the backbone on its own."""
    method.encode_crops = lambda crops: [method.backbone(x) for x in crops]
    return method


def step_time(method, optimizer, crops) -> float:
    synchronize = torch.cuda.synchronize if crops[0].is_cuda else lambda: None
    synchronize()
    t0 = time.perf_counter()
    loss = method(*crops).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=32, help="global crop side (px)")
    ap.add_argument("--local-size", type=int, default=16, help="local crop side (px)")
    ap.add_argument("--width", type=int, default=16, help="ResNet-18 width (64: the standard one)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU")
    args = parse_args(ap, TOY, argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    sizes = [args.size] * GLOBAL_CROPS + [args.local_size] * LOCAL_CROPS
    crops = [
        torch.randn(args.batch, 3, s, s, generator=g).to(args.device, memory_format=torch.channels_last) for s in sizes
    ]
    variants = {"per crop": make_method(args, batched=False), "batched by resolution": make_method(args, batched=True)}
    times: dict = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (method, optimizer) in variants.items():
            step_time(method, optimizer, crops)  # warm-up
            times[name] += [step_time(method, optimizer, crops) for _ in range(args.steps)]
    shape = f"{GLOBAL_CROPS} x {args.size} px + {LOCAL_CROPS} x {args.local_size} px, batch {args.batch}"
    setting = f"torch {torch.__version__}, {args.device}, {args.threads} thread(s)"
    print(f"SwAV, ResNet-18 width {args.width}, {shape}; {setting}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:22s} median step {median * 1e3:9.1f} ms over {len(times[name])} steps")
    print(f"ratio per crop / batched: {medians['per crop'] / medians['batched by resolution']:.2f}")


if __name__ == "__main__":
    main()
