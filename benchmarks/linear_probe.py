"""Linear probe: sparsehead's full-batch L-BFGS against scikit-learn's LogisticRegression.

Both run the same protocol on the same features in one process: standardise with training
statistics, choose the L2 strength on the same stratified validation split of the training set
over the same grid, refit on the whole training set, score the test set. scikit-learn fits each
grid value from scratch (its usual use, lbfgs solver); sparsehead walks the grid warm-started,
preconditioned, and stops after the validation peak.

Features: random-projection features of real CIFAR-10 pixels (ReLU(x W), W Gaussian, default
50,000 x 512), or a run's frozen backbone features with --run RUN_FOLDER (extracted through the
evaluation cache).

    OMP_NUM_THREADS=1 python benchmarks/linear_probe.py --threads 1
    python benchmarks/linear_probe.py --run runs/c10 --device cuda
    python benchmarks/linear_probe.py --toy   # both solvers on 100 images of dim 16 (synthetic without CIFAR-10)
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from _data import CIFAR10, toy_cifar10
from _toy import parse_args

TOY = dict(dim=16, train=100)


def machine(device: torch.device) -> str:
    cpu = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        return f"{cpu}; GPU {torch.cuda.get_device_name(device)}"
    return f"{cpu}, no GPU used"


def random_projection_features(root: Path, dim: int, n_train: int, overrides=(), seed: int = 0):
    from sparsehead import config
    from sparsehead.data import datasets

    cfg = config.load(
        None,
        ["data.source=imagefolder", f"data.root={root}", *overrides]
        + ([f"data.subset={n_train}"] if n_train < 50000 else []),
    )
    train, test = datasets.load(cfg.data, "train"), datasets.load(cfg.data, "test")
    proj = torch.randn(train.images[0].numel(), dim, generator=torch.Generator().manual_seed(seed))
    proj /= proj.shape[0] ** 0.5

    def features(images):
        return torch.cat(
            [
                torch.relu((images[i : i + 5000].float().flatten(1) / 255 - 0.5) @ proj)
                for i in range(0, len(images), 5000)
            ]
        )

    return features(train.images), train.labels, features(test.images), test.labels


def run_features(run: str, device: torch.device):
    from sparsehead.config import with_data_overrides
    from sparsehead.data import datasets
    from sparsehead.evaluate.protocol import frozen_features
    from sparsehead.evaluate.runner import check_data
    from sparsehead.runs.model import load_trained

    trained = load_trained(run, device)
    data_cfg = with_data_overrides(trained.cfg, ()).data
    train, test = datasets.load(data_cfg, "train"), datasets.load(data_cfg, "test")
    check_data(trained, data_cfg, train, test, resize=False)
    ((xtr, xte),) = frozen_features(trained, train, test, device, with_z=False).values()
    return xtr, train.labels, xte, test.labels


def sklearn_probe(xtr, ytr, xte, yte, grid, val_fraction, seed, max_iter):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from sparsehead.evaluate.linear import stratified_validation_split

    fit, val = stratified_validation_split(ytr, val_fraction, seed)
    scaler = StandardScaler().fit(xtr[fit])
    xfit, xval = scaler.transform(xtr[fit]), scaler.transform(xtr[val])
    scores, iters = {}, {}
    for wd in sorted(grid, reverse=True):
        model = LogisticRegression(C=1 / (wd * len(fit)), max_iter=max_iter).fit(xfit, ytr[fit])
        scores[wd], iters[wd] = model.score(xval, ytr[val]), int(model.n_iter_.max())
    best = max(sorted(grid, reverse=True), key=lambda wd: scores[wd])
    scaler = StandardScaler().fit(xtr)
    start = time.perf_counter()
    model = LogisticRegression(C=1 / (best * len(xtr)), max_iter=max_iter).fit(scaler.transform(xtr), ytr)
    refit = time.perf_counter() - start
    proba = model.predict_proba(scaler.transform(xte))
    top5 = np.argsort(-proba, axis=1)[:, :5]
    return {
        "top1": float((top5[:, 0] == yte).mean()),
        "top5": float((top5 == yte[:, None]).any(1).mean()),
        "weight_decay": best,
        "refit_seconds": refit,
        "fits": len(scores),
        "iterations": sum(iters.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cifar10",
        type=Path,
        default=CIFAR10,
        help="ImageFolder copy of CIFAR-10 (train/, test/); default $SPARSEHEAD_CIFAR10 or "
        "../shared/data/cifar10; --toy: --train of its images, synthetic ones where absent",
    )
    parser.add_argument("--dim", type=int, default=512, help="random-projection feature dimension")
    parser.add_argument("--train", type=int, default=50000, help="training images (class-stratified subset)")
    parser.add_argument("--run", help="use this run's frozen backbone features instead")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (scikit-learn follows OMP_NUM_THREADS)")
    parser.add_argument("--skip-sklearn", action="store_true")
    args = parse_args(parser, TOY)
    root, cache = args.cifar10, []
    if args.toy:  # a temporary copy, its decoded cache beside it (not in the user's cache)
        root = toy_cifar10(args.cifar10, args.train)
        cache = [f"data.cache_dir={root / 'cache'}"]

    from sparsehead.evaluate.linear import WEIGHT_DECAYS, linear_probe
    from sparsehead.runs.model import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    start = time.perf_counter()
    if args.run:
        xtr, ytr, xte, yte = run_features(args.run, device)
        source = f"backbone features of {args.run}"
    else:
        xtr, ytr, xte, yte = random_projection_features(root, args.dim, args.train, cache)
        source = f"random-projection features (ReLU, dim {args.dim}) of the pixels of {root}"
    print(
        f"features: {source}: train {tuple(xtr.shape)}, test {tuple(xte.shape)} "
        f"({time.perf_counter() - start:.1f} s to build)"
    )
    print(f"machine: {machine(device)}")

    start = time.perf_counter()
    ours = linear_probe(xtr, ytr, xte, yte, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ours_time = time.perf_counter() - start
    rows = [
        (
            "sparsehead (torch L-BFGS, %s)" % device.type,
            ours_time,
            ours["top1"],
            ours["top5"],
            ours["weight_decay"],
            f"{len(ours['validation_top1'])} fits + refit",
        )
    ]
    if not args.skip_sklearn:
        import sklearn

        start = time.perf_counter()
        ref = sklearn_probe(xtr.numpy(), ytr.numpy(), xte.numpy(), yte.numpy(), WEIGHT_DECAYS, 0.2, 0, 1000)
        rows.append(
            (
                f"scikit-learn {sklearn.__version__} LogisticRegression (lbfgs)",
                time.perf_counter() - start,
                ref["top1"],
                ref["top5"],
                ref["weight_decay"],
                f"{ref['fits']} fits + refit ({ref['refit_seconds']:.1f} s)",
            )
        )
    print("\n| solver | seconds | top-1 | top-5 | weight decay (C = 1/(wd n)) | work |\n|---|---|---|---|---|---|")
    for name, seconds, top1, top5, wd, work in rows:
        print(f"| {name} | {seconds:.1f} | {100 * top1:.2f} | {100 * top5:.2f} | {wd:g} | {work} |")
    if len(rows) == 2:
        print(f"\nspeed-up {rows[1][1] / rows[0][1]:.1f}x, top-1 gap {100 * (rows[0][2] - rows[1][2]):+.2f} points")


if __name__ == "__main__":
    main()
