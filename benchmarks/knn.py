"""The k-NN report and the linear probe on synthetic features, scaled toward ImageNet's 1,281,167 x 2048.

Each case runs in a fresh process (its peak memory its own): Gaussian class clusters of --dim
features, --test test samples, the training set at each of --train sizes. Reported: seconds,
the peak memory with the input features (GPU: torch's peak allocation; CPU: the process's peak
resident set above the idle process's), and for the k-NN the similarity matmul's GFLOP/s.

The k-NN is timed as evaluate/knn.py runs it (knn_report: the bank, then both votes from one
top-k pass) and, on the largest bank, one pass against one pass per vote (the code before). The
last lines extrapolate to ImageNet (1,281,167 train x 50,000 val x 2048): the k-NN's time from the
largest size's matmul rate (its cost is that matmul, N_train x N_test x dim), its memory from the
bank's size; the probe's time per fit linearly in N x dim x classes (the number of L-BFGS
iterations of the real features may differ).

    OMP_NUM_THREADS=2 python benchmarks/knn.py                  # the defaults below
    python benchmarks/knn.py --device cuda --train 100000 400000 1281167 --test 50000
    python benchmarks/knn.py --toy
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import platform
import resource
import time

import torch

from _toy import parse_args

TOY = dict(train=[300, 600], test=50, dim=16, classes=5, probe_train=[200], probe_dim=8, probe_classes=5)
IMAGENET = dict(train=1_281_167, test=50_000, dim=2048, classes=1000)


def features(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples of `classes` Gaussian clusters, written in place (no temporary of the full size)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.empty(n, dim)
    for s in range(0, n, 65536):
        x[s : s + 65536] = centres[y[s : s + 65536]] + 2.0 * torch.randn(len(y[s : s + 65536]), dim, generator=g)
    return x, y


def peak_memory(device: torch.device) -> float:
    """GiB: torch's peak allocation on a GPU, the process's peak resident set on the CPU (the
    cases subtract the idle process's)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(fn, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def knn_case(n_train: int, args: argparse.Namespace, two_passes: bool) -> dict:
    from sparsehead.evaluate.knn import Vote, feature_bank, knn_predict, knn_report

    device = torch.device(args.device)
    idle = peak_memory(device)
    xtr, ytr = features(n_train, args.dim, args.classes, seed=1)
    xte, yte = features(args.test, args.dim, args.classes, seed=2)
    out = {"seconds": timed(lambda: knn_report(xtr, ytr, xte, yte, device=device), device)}
    out["peak_gib"] = peak_memory(device) - idle
    if two_passes:  # on one bank, in turns: both votes from one pass, and one pass per vote (the code before)
        bank, votes = feature_bank(xtr, device), (Vote(5), Vote(200, 0.07))
        out["one_pass_seconds"] = timed(lambda: knn_predict(bank, ytr, xte, votes), device)
        out["two_pass_seconds"] = timed(lambda: [knn_predict(bank, ytr, xte, [vote]) for vote in votes], device)
    out["gflops"] = 2 * n_train * args.test * args.dim / out["seconds"] / 1e9
    return out


def probe_case(n_train: int, args: argparse.Namespace) -> dict:
    from sparsehead.evaluate.linear import linear_probe

    device = torch.device(args.device)
    idle = peak_memory(device)
    xtr, ytr = features(n_train, args.probe_dim, args.probe_classes, seed=1)
    xte, yte = features(args.test, args.probe_dim, args.probe_classes, seed=2)
    result = {}
    seconds = timed(
        lambda: result.update(linear_probe(xtr, ytr, xte, yte, weight_decays=(1e-4,), device=device)), device
    )
    return {"seconds": seconds, "peak_gib": peak_memory(device) - idle, "iterations": result["iterations"]}


def in_fresh_process(fn, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, nargs="+", default=[10_000, 40_000, 160_000], help="k-NN training sizes")
    parser.add_argument("--test", type=int, default=1000, help="test samples")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension (ResNet-50: 2048)")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--probe-train", type=int, nargs="*", default=[8_000, 16_000], help="linear probe sizes")
    parser.add_argument("--probe-dim", type=int, default=2048)
    parser.add_argument("--probe-classes", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    args = parse_args(parser, TOY)
    device = torch.device(args.device)
    gpu = f"; GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU used"
    print(f"machine: {platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}{gpu}")

    print(
        f"\nk-NN (k = 5 vote and k = 200 weighted, T = 0.07), test {args.test}, dim {args.dim}, {args.classes} classes"
    )
    print("| train | seconds | peak GiB | matmul GFLOP/s |\n|---|---|---|---|")
    for n in args.train:
        r = in_fresh_process(knn_case, n, args, n == args.train[-1])
        print(f"| {n:,} | {r['seconds']:.2f} | {r['peak_gib']:.2f} | {r['gflops']:.1f} |")
    print(
        f"on the largest bank: both votes from one pass {r['one_pass_seconds']:.2f} s, "
        f"one pass per vote (before) {r['two_pass_seconds']:.2f} s"
    )
    flop = 2 * IMAGENET["train"] * IMAGENET["test"] * IMAGENET["dim"]
    bank = IMAGENET["train"] * IMAGENET["dim"] / 2**30  # GiB per byte of a feature
    print(
        f"ImageNet ({IMAGENET['train']:,} x {IMAGENET['test']:,} x {IMAGENET['dim']}): {flop / 1e15:.2f} PFLOP, "
        f"{flop / (r['gflops'] * 1e9) / 3600:.1f} h at the rate above; bank {4 * bank:.1f} GiB in float32, "
        f"{2 * bank:.1f} GiB in float16"
    )

    if not args.probe_train:
        return
    print(f"\nlinear probe (one weight decay: one fit), dim {args.probe_dim}, {args.probe_classes} classes")
    print("| train | seconds | peak GiB | L-BFGS iterations |\n|---|---|---|---|")
    for n in args.probe_train:
        p = in_fresh_process(probe_case, n, args)
        print(f"| {n:,} | {p['seconds']:.2f} | {p['peak_gib']:.2f} | {p['iterations']} |")
    scale = IMAGENET["train"] * IMAGENET["dim"] * IMAGENET["classes"] / (n * args.probe_dim * args.probe_classes)
    print(
        f"ImageNet ({IMAGENET['classes']} classes): x{scale:.0f} the work of the largest size per iteration, "
        f"about {p['seconds'] * scale / 3600:.1f} h a fit at its iteration count; "
        f"features {4 * bank:.1f} GiB in float32"
    )


if __name__ == "__main__":
    main()
