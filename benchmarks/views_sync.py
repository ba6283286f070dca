"""CPU time of the batched views (data/views.py ViewGenerator), the path that must stay sync-free on a GPU.

    PYTHONPATH=src python benchmarks/views_sync.py [--threads 1] [--repeats 7] [--toy]

The colour jitter and the blur act on the whole batch with per-image masks (torch.where) rather
than on the sub-batches that nonzero() would pick (each nonzero is a host-device sync on a GPU);
this script times what that costs where the same code runs on CPUs (laptops, the tests). Cases:
SimCLR's CIFAR recipe on 512 x 3 x 32 x 32 uint8 (two views), SimCLR and BYOL (blur on, p = 1 and
0.1) on 64 x 3 x 224 x 224, and the colour jitter alone on the 512 x 32 x 32 batch. Each case: one
warm-up call, then `--repeats` timed calls; the median and the best are printed in milliseconds.
`--toy`: small batches and two repeats, a few seconds in all (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sparsehead import config
from sparsehead.data import views as V

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def time_calls(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def view_case(recipe: str, n: int, size: int, repeats: int) -> tuple[float, float]:
    cfg = config.load(None, [f"augment.recipe={recipe}"]).augment
    gen = V.ViewGenerator(cfg, size, MEAN, STD)
    images = torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    g = torch.Generator().manual_seed(1)
    return time_calls(lambda: gen(images, g), repeats)


def jitter_case(n: int, size: int, repeats: int) -> tuple[float, float]:
    """color_jitter alone on every image of a float batch (SimCLR CIFAR factors: strength 0.5)."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(n, 3, size, size, generator=g)
    u = torch.rand(n, 4, generator=g)
    factors = torch.cat([0.6 + 0.8 * u[:, :3], 0.1 * (2 * u[:, 3:] - 1)], dim=1)
    order = torch.argsort(torch.rand(n, 4, generator=g), dim=1)
    return time_calls(lambda: V.color_jitter(x, factors, order), repeats)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--toy", action="store_true", help="small batches, two repeats: a few seconds")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 2 if args.toy else args.repeats
    small, big = (64, 8) if args.toy else (512, 64)
    big_size = 64 if args.toy else 224
    cases = [
        (f"simclr views {small}x3x32x32", lambda: view_case("simclr", small, 32, repeats)),
        (f"color_jitter {small}x3x32x32", lambda: jitter_case(small, 32, repeats)),
        (f"simclr views {big}x3x{big_size}x{big_size}", lambda: view_case("simclr", big, big_size, repeats)),
        (f"byol views {big}x3x{big_size}x{big_size}", lambda: view_case("byol", big, big_size, repeats)),
    ]
    print(f"torch {torch.__version__}, {args.threads} thread(s), {repeats} repeats")
    for name, case in cases:
        med, best = case()
        print(f"{name:34s} median {med:9.2f} ms   best {best:9.2f} ms")


if __name__ == "__main__":
    main()
