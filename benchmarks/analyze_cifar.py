"""Time `sparsehead analyze`'s parts on the CIFAR-10 test set (10,000 images) with a small model, and the
spectrum of a 50,000 x 2,048 random feature matrix (the ResNet-50-sized case).

    python benchmarks/analyze_cifar.py [--root ../shared/data/cifar10] [--width 8] [--device auto]
    python benchmarks/analyze_cifar.py --toy   # every stage on 100 images (synthetic without --root's)

Prints one line per stage with its wall time; numbers depend on the machine (printed first).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _data import CIFAR10, toy_cifar10  # noqa: E402
from _toy import parse_args  # noqa: E402
from sparsehead import config  # noqa: E402
from sparsehead.analysis import metrics, plots  # noqa: E402
from sparsehead.analysis.analyze import spectra_of_run, view_features  # noqa: E402
from sparsehead.analysis.html_report import render_html  # noqa: E402
from sparsehead.data import datasets  # noqa: E402
from sparsehead.data.views import ViewGenerator  # noqa: E402
from sparsehead.evaluate.features import extract  # noqa: E402
from sparsehead.maths.spectrum import spectrum  # noqa: E402
from sparsehead.runs.model import build_model, resolve_device  # noqa: E402

TOY = dict(width=4, big_rows=300, big_dim=64)
TOY_IMAGES = 100  # per split of the toy copy of --root


@contextmanager
def timed(label: str, times: dict):
    start = time.perf_counter()
    yield
    times[label] = time.perf_counter() - start
    print(f"{label:<52s} {times[label]:8.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root",
        type=Path,
        default=CIFAR10,
        help="CIFAR-10 ImageFolder (train/ and test/); default $SPARSEHEAD_CIFAR10 or "
        "../shared/data/cifar10; --toy: 100 of its images, synthetic ones where absent",
    )
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--big-rows", type=int, default=50_000)
    parser.add_argument("--big-dim", type=int, default=2_048)
    args = parse_args(parser, TOY)
    root, cache = args.root, []
    if args.toy:  # a temporary copy, its decoded cache beside it (not in the user's cache)
        root = toy_cifar10(args.root, TOY_IMAGES)
        cache = [f"data.cache_dir={root / 'cache'}"]

    device = resolve_device(args.device)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}"
        f"{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}"
    )
    times: dict[str, float] = {}
    cfg = config.load(None, ["data.source=imagefolder", f"data.root={root}", f"model.width={args.width}", *cache])

    with timed("load CIFAR-10 test split (decode or cache)", times):
        test = datasets.load(cfg.data, "test")
    mean, std = test.channel_stats()
    views = ViewGenerator(cfg.augment, cfg.data.image_size, mean, std)
    method = build_model(cfg).to(device).eval()  # untrained weights: the cost does not depend on them
    with timed(f"extract r, z of {len(test)} images (resnet18 width {args.width})", times):
        r, z = extract(method, test, views, device)
    with timed("extract r, z of two augmented views", times):
        pairs = view_features(method, test, views, device)
    print(f"  r: {tuple(r.shape)}, z: {tuple(z.shape)}")
    for name, x in (("r", r), ("z", z)):
        with timed(f"{name}: spectral summary (raw + normalised spectra, ranks)", times):
            metrics.spectral_summary(x)
        with timed(f"{name}: min-max ratio, raw + normalised ({len(x)} queries)", times):
            metrics.min_max_ratio(x)
            metrics.min_max_ratio(x, normalize=True)
        with timed(f"{name}: uniformity", times):
            metrics.uniformity(x)
        with timed(f"{name}: alignment", times):
            metrics.alignment(*pairs[name])
        with timed(f"{name}: class centres (divergence, Delta_mu, NCC accuracy)", times):
            metrics.centre_divergence(x, test.labels)
            metrics.delta_mu(x, test.labels)
            metrics.nearest_centre_accuracy(x, test.labels)
    with timed("figures + HTML report", times):
        results = {k: metrics.spectral_summary(v) for k, v in (("r", r), ("z", z))}
        with tempfile.TemporaryDirectory() as tmp:
            png = plots.save_png(spectra_of_run(results, "benchmark"), Path(tmp) / "spectra.png")
            render_html("benchmark", [], results, None, [("spectra.png", png, "")], "analysis.json")
    print(f"{'total of the CIFAR-10 stages':<52s} {sum(times.values()):8.2f} s")

    big = torch.randn(args.big_rows, args.big_dim, generator=torch.Generator().manual_seed(0))
    with timed(f"spectrum of a {args.big_rows} x {args.big_dim} float32 matrix", times):
        eigs = spectrum(big.to(device))
    print(f"  largest / smallest eigenvalue: {eigs[0]:.4f} / {eigs[-1]:.4f}")
    with timed(f"full diagnostics of it ({metrics.PAIRWISE_SAMPLES} rows for pairwise metrics)", times):
        metrics.diagnostics(big.to(device))


if __name__ == "__main__":
    main()
