"""Time sparsehead's model step (forward, float32 loss, backward, optimiser step) under each
train.precision / train.channels_last (/ train.compile) setting, to choose their defaults.

    PYTHONPATH=src python benchmarks/train_options.py [--steps 6] [--repeats 3] [--compile]
    PYTHONPATH=src python benchmarks/train_options.py --toy   # every setting at width 4, batch 8

SimCLR, CIFAR ResNet-18 of width 16, 32x32 inputs, batch 256 (two views). Settings are timed in
turns (round robin, `--repeats` rounds) after warm-up steps, and the median per setting is kept.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _toy import parse_args
from sparsehead import config
from sparsehead.core.precision import autocast
from sparsehead.runs.model import build_model

TOY = dict(batch=8, width=4, steps=1, warmup=1, repeats=1)


def make_step(cfg, precision: str, channels_last: bool, compile_model: bool):
    torch.manual_seed(0)
    method = build_model(cfg)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    method = method.to(memory_format=fmt)
    model = torch.compile(method) if compile_model else method
    opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    n = cfg.train.batch_size
    x1 = torch.randn(n, 3, 32, 32).contiguous(memory_format=fmt)
    x2 = torch.randn(n, 3, 32, 32).contiguous(memory_format=fmt)
    device = torch.device("cpu")

    def step():
        with autocast(precision, device):
            loss = model(x1, x2).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--width", type=int, default=16, help="the ResNet-18's width")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per setting and round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="rounds over all settings")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    args = parse_args(ap, TOY)
    cfg = config.load(
        None,
        ["data.image_size=32", f"model.width={args.width}", f"train.batch_size={args.batch}", "method.name=simclr"],
    )
    settings = [(p, cl, False) for p in args.precision for cl in (False, True)]
    if args.compile:
        settings.append(("fp32", False, True))
    steps = {s: make_step(cfg, *s) for s in settings}
    for s, step in steps.items():
        for _ in range(args.warmup):
            step()
    times = {s: [] for s in settings}
    for _ in range(args.repeats):
        for s, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[s].append((time.perf_counter() - t0) / args.steps)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {cfg.train.batch_size}")
    print(f"{'precision':>9} {'channels_last':>13} {'compile':>7} {'s/step':>8} {'img/s':>7}")
    for (p, cl, comp), ts in times.items():
        t = statistics.median(ts)
        print(f"{p:>9} {str(cl):>13} {str(comp):>7} {t:8.3f} {cfg.train.batch_size / t:7.1f}")


if __name__ == "__main__":
    main()
