"""The collapse monitor's cost against the training step it watches, measured in the same loop.

    PYTHONPATH=src python benchmarks/collapse_monitor.py [--sizes demo resnet50] [--steps 20]
    PYTHONPATH=src python benchmarks/collapse_monitor.py --toy   # every size at toy scale, in seconds

Each size trains SimCLR on random 3-channel images (the model step: forward of both views, float32
loss, backward, Adam step) and, around it, times the monitor's own work: `observe` (copying r and
the two views' z into the window) and `logs` (the spectra of the window: effective rank, RankMe,
top-eigenvalue share of r and z, LiDAR of z), both after every step. A run computes the spectra
every train.log_every steps, so the cost is (observe + logs / log_every) / step, medians over the
steps. Then the run's rate: steps/s of the same loop with the spectra every --log-every steps, as a
run makes them, with the monitor off, at the logging step (train.collapse_spectra=step) and on a
CPU thread (thread, including the wait for the last window at the end).

- demo: configs/demo.yaml's model (ResNet-18 of width 16, 16x16 digits, r 128-d, z 64-d), batch 256.
- resnet50: a ResNet-50's embeddings (r 2,048-d, MLP head 2,048 -> 128) on 32x32 images, batch
  `--resnet50-batch` (default 32: a reduced batch, for a CPU; the monitor's cost does not grow with
  the batch, the step does, so a full batch makes the share smaller still).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _toy import parse_args
from sparsehead import config
from sparsehead.runs.model import build_model
from sparsehead.training.collapse import CollapseMonitor
from sparsehead.training.optim import build_optimizer

SIZES = {
    "demo": ["model.width=16", "data.image_size=16", "head.hidden_dim=256", "head.out_dim=64"],
    "resnet50": ["model.backbone=resnet50", "data.image_size=32", "head.hidden_dim=2048", "head.out_dim=128"],
}
TOY = dict(steps=2, window=32, demo_batch=8, resnet50_batch=4, width=4, log_every=1)


def build(size: str, batch: int, args, spectra: str = "step"):
    """The size's SimCLR, its optimiser, a collapse monitor (its spectra where `spectra` says; "off":
    none) with a full window from the start (random rows of the right widths: every timed spectrum is
    of train.collapse_window rows, as in a run past its first steps), and the image side."""
    overrides = SIZES[size] + [f"train.batch_size={batch}", f"train.collapse_window={args.window}"]
    if args.width:
        overrides.append(f"model.width={args.width}")
    monitoring = ["train.collapse_monitor=false"] if spectra == "off" else [f"train.collapse_spectra={spectra}"]
    cfg = config.load(None, ["data.source=digits", "method.name=simclr", *overrides, *monitoring])
    torch.manual_seed(0)
    method = build_model(cfg).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim, method)
    monitor = CollapseMonitor(cfg.train, "benchmark")
    r, z = torch.randn(args.window, method.backbone.feature_dim), torch.randn(2, args.window, method.embedding_dim)
    monitor.observe(torch.zeros(args.window), r, tuple(z))
    monitor.logs()  # the first spectra also load the linear-algebra kernels: a one-off, not timed
    monitor.final_logs(0)
    return method, optimizer, monitor, cfg.data.image_size


def train_step(method, optimizer, batch: int, side: int):
    x1, x2 = (torch.randn(batch, 3, side, side).contiguous(memory_format=torch.channels_last) for _ in range(2))
    out = method(x1, x2)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    return out


def measure(size: str, batch: int, args) -> dict:
    method, optimizer, monitor, side = build(size, batch, args)
    times = {"step": [], "observe": [], "logs": []}
    for step in range(1, args.steps + 2):  # the first step warms up and is not kept
        t0 = time.perf_counter()
        out = train_step(method, optimizer, batch, side)
        t1 = time.perf_counter()
        monitor.observe(torch.zeros(batch), out.r, out.z)
        t2 = time.perf_counter()
        logs = monitor.logs()  # the spectra, timed every step: a run computes them every log_every steps
        if step > 1:
            times["step"].append(t1 - t0)
            times["observe"].append(t2 - t1)
            times["logs"].append(time.perf_counter() - t2)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "size": size,
        "batch": batch,
        "r_dim": method.backbone.feature_dim,
        "z_dim": method.embedding_dim,
        "window_rows": logs["collapse/window"],
        **{f"{k}_s": v for k, v in med.items()},
        "cost_pct": 100 * (med["observe"] + med["logs"] / args.log_every) / med["step"],
    }


def steps_per_second(size: str, batch: int, args, spectra: str) -> float:
    """The loop's rate over --steps steps (after one warm-up step) as a run makes them: observe every
    step, logs and notes every --log-every steps, and at the end the wait for the pending window."""
    method, optimizer, monitor, side = build(size, batch, args, spectra)
    for step in range(args.steps + 1):
        if step == 1:
            start = time.perf_counter()
        out = train_step(method, optimizer, batch, side)
        monitor.observe(torch.zeros(batch), out.r, out.z)
        if step % args.log_every == 0:
            monitor.logs()
            monitor.notes(step)
    monitor.final_logs(args.steps)
    return args.steps / (time.perf_counter() - start)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    ap.add_argument("--steps", type=int, default=20, help="timed steps per size (after one warm-up step)")
    ap.add_argument("--log-every", type=int, default=10, help="train.log_every of the cost: steps between spectra")
    ap.add_argument("--window", type=int, default=1024, help="train.collapse_window")
    ap.add_argument("--demo-batch", type=int, default=256)
    ap.add_argument("--resnet50-batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=None, help="override every size's ResNet width (toy)")
    args = parse_args(ap, TOY, argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, log_every {args.log_every}")
    for size in args.sizes:
        batch = getattr(args, f"{size}_batch")
        r = measure(size, batch, args)
        print(
            f"{r['size']:>8}: batch {r['batch']}, r {r['r_dim']}-d, z {r['z_dim']}-d, window {r['window_rows']} rows | "
            f"step {r['step_s']:.3f} s, observe {1e3 * r['observe_s']:.2f} ms, spectra {r['logs_s']:.3f} s "
            f"every {args.log_every} steps -> monitor cost {r['cost_pct']:.2f}% of the step"
        )
        rates = {spectra: steps_per_second(size, batch, args, spectra) for spectra in ("off", "step", "thread")}
        print(
            f"{size:>8}: steps/s with the spectra every {args.log_every} steps: "
            + ", ".join(f"{spectra} {rate:.3f}" for spectra, rate in rates.items())
            + f" -> thread / step {rates['thread'] / rates['step']:.3f}x"
        )


if __name__ == "__main__":
    main()
