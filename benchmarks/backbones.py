"""Model step time (forward, float32 SimCLR loss, backward, AdamW step) of a timm ViT against the CIFAR
ResNet-18 at the same image size and batch, and the ViT with and without channels_last, in one run.

    PYTHONPATH=src python benchmarks/backbones.py [--batch 128] [--steps 4] [--repeats 3]
    PYTHONPATH=src python benchmarks/backbones.py --toy   # every setting, a step of batch 2

The ViT is configs/cifar10_vit_tiny.yaml's (4x4 patches of 32 px, width 128, depth 4); the ResNets are
configs/cifar10_cpu.yaml's (width 16) and the standard width 64. Settings are timed in turns (round robin)
after warm-up steps; the median per setting is kept, and the ratios are to the width-16 ResNet.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _toy import parse_args
from sparsehead import config
from sparsehead.runs.model import build_model

VIT = [
    "model.backbone=timm:vit_tiny_patch16_224",
    "model.timm_args.patch_size=4",
    "model.timm_args.embed_dim=128",
    "model.timm_args.depth=4",
    "model.timm_args.num_heads=4",
]
SETTINGS = {  # name: (overrides, channels_last)
    "resnet18 width 16": (["model.width=16"], True),
    "resnet18 width 64": (["model.width=64"], True),
    "vit d128x4 p4": (VIT, False),
    "vit d128x4 p4 channels_last": (VIT, True),
}
TOY = dict(batch=2, steps=1, warmup=1, repeats=1)


def make_step(overrides, channels_last: bool, batch: int, size: int):
    cfg = config.load(None, [f"data.image_size={size}", f"train.batch_size={batch}", "head.hidden_dim=512", *overrides])
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    method = build_model(cfg).to(memory_format=fmt)
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3)
    x1, x2 = (torch.randn(batch, 3, size, size).contiguous(memory_format=fmt) for _ in range(2))

    def step():
        loss = method(x1, x2).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in method.backbone.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per setting and round")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = parse_args(ap, TOY)
    steps = {name: make_step(o, cl, args.batch, args.size) for name, (o, cl) in SETTINGS.items()}
    for step, _ in steps.values():
        for _ in range(args.warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, (step, _) in steps.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t) / args.steps)
    base = statistics.median(times["resnet18 width 16"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} x 2 views, {args.size} px")
    print(f"{'backbone':<30} {'params':>9} {'s/step':>8} {'img/s':>7} {'x resnet18 w16':>14}")
    for name, (_, params) in steps.items():
        med = statistics.median(times[name])
        print(f"{name:<30} {params:>9,} {med:>8.3f} {args.batch / med:>7.1f} {med / base:>14.2f}")


if __name__ == "__main__":
    main()
