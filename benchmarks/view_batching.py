"""Forward + backward of the backbone over the views of a batch as one batch or as several, in both
memory formats: what SimCLR's one batch of both views (BatchNorm over both, as its reference code)
costs on this device against one forward per view.

    PYTHONPATH=src python benchmarks/view_batching.py [--width 16] [--batch 256] [--repeats 4]
    PYTHONPATH=src python benchmarks/view_batching.py --toy

The network: sparsehead's CIFAR ResNet-18 at 32x32 (docs/performance.md, the CPU regression).
"""

from __future__ import annotations

import argparse
import time

import torch

from _toy import parse_args
from sparsehead import config
from sparsehead.runs.model import build_model

TOY = dict(width=4, batch=4, repeats=1)


def seconds(backbone: torch.nn.Module, x: torch.Tensor, chunks: int, repeats: int) -> float:
    """Best time of forward + backward of `x` cut into `chunks` batches (after one warm-up pass)."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for part in x.chunk(chunks):
            backbone(part).sum().backward()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256, help="images per view (two views)")
    parser.add_argument("--repeats", type=int, default=4)
    args = parse_args(parser, TOY, argv)
    torch.manual_seed(0)
    cfg = config.load(None, ["data.source=digits", "data.image_size=32", f"model.width={args.width}"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, width {args.width}, 2 x {args.batch} views")
    for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        backbone = build_model(cfg).backbone.to(memory_format=fmt)
        x = torch.randn(2 * args.batch, 3, 32, 32).contiguous(memory_format=fmt)
        one, two = (seconds(backbone, x, chunks, args.repeats) for chunks in (1, 2))
        print(f"{name:>13}: one batch {one:.3f} s, one per view {two:.3f} s, ratio {one / two:.2f}")


if __name__ == "__main__":
    main()
