"""Pretraining throughput, side by side in one process: sparsehead vs lightly vs plain torchvision.

    PYTHONPATH=src python benchmarks/throughput.py [--data ../shared/data/cifar10/train]
        [--images 5000] [--steps 5] [--repeats 2] [--workers 0 1 2]
    PYTHONPATH=src python benchmarks/throughput.py --toy   # every step at toy size, in seconds
    PYTHONPATH=src python benchmarks/throughput.py --regions [--compile-views]   # + sparsehead's step per region

All pipelines train the same network (sparsehead's CIFAR ResNet-18 of width 16 with a 2-layer
MLP head 512 -> 128) with SimCLR's NT-Xent (temperature 0.5) at 32x32, batch 256, on the same
JPEG subset, with the same augmentation recipe (SimCLR's CIFAR recipe: crop scale 0.08-1,
flip 0.5, jitter 0.8 of strength 0.5, grayscale 0.2, no blur):

(a) sparsehead: the uint8 cache of the images (decoded once, timed separately), batched views
    and the model step, as train.py runs them;
(b) lightly's documented recipe: SimCLRTransform, SimCLRProjectionHead, NTXentLoss, a torch
    DataLoader over torchvision's ImageFolder; best over DataLoader num_workers;
(c) a plain torchvision per-image pipeline (transforms.v2) with the same DataLoader, sparsehead's
    model and loss; best over num_workers.

Each (pipeline, workers) setting is timed in turns, `--repeats` rounds of `--steps` steps after
one warm-up step per round (DataLoader workers are started anew each round, so idle settings
never steal CPU), and the median step time is kept. The script also measures the machine's
peak float32 matmul GFLOP/s and the model's FLOPs per step (FlopCounterMode). `--regions`: sparsehead's
step timed per region (views, forward, backward, optimiser; benchmarks/_regions.py), `--compile-views`:
its views compiled (augment.compile).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from _data import CIFAR10, subset_folder, synthetic_images, temp_dir
from _regions import StepParts, print_regions, region_report
from _toy import parse_args
from _train_step import give_an_evaluation_split, train_step_rate
from sparsehead import config
from sparsehead.data import datasets
from sparsehead.data.views import ViewGenerator
from sparsehead.methods.losses import nt_xent
from sparsehead.models.backbones import use_channels_last
from sparsehead.runs.model import build_model
from sparsehead.training.optim import build_optimizer

SIZE = 32
TOY = dict(images=20, batch=8, width=4, steps=1, repeats=1, workers=[0, 1], matmul_size=128, regions=True)


def config_overrides(root: Path, batch: int, width: int, compile_views: bool = False) -> list[str]:
    return [
        "data.source=imagefolder",
        f"data.root={root}",
        f"data.image_size={SIZE}",
        f"data.cache_dir={root.parent / 'cache'}",
        f"model.width={width}",
        "head.hidden_dim=512",
        "head.out_dim=128",
        f"train.batch_size={batch}",
        "method.name=simclr",
        "optim.name=adam",
        f"augment.compile={str(compile_views).lower()}",
    ]


def peak_matmul_gflops(n: int, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times) / 1e9


class SparseheadPipeline:
    """(a): index the uint8 tensor, make both views as a batch, one model step, in the memory format
    pretraining picks on this device (train.channels_last: NHWC where oneDNN runs it safely)."""

    def __init__(self, cfg, data):
        self.cfg, self.data, self.batch = cfg, data, cfg.train.batch_size
        mean, std = data.channel_stats()
        nhwc = cfg.train.channels_last and use_channels_last(cfg.model, SIZE, torch.device("cpu"))
        memory_format = torch.channels_last if nhwc else torch.contiguous_format
        self.views = ViewGenerator(cfg.augment, SIZE, mean, std, memory_format)
        torch.manual_seed(0)
        self.method = build_model(cfg).to(memory_format=memory_format)
        self.opt = build_optimizer(cfg.optim, self.method, cfg.train.batch_size)
        self.gen = torch.Generator().manual_seed(0)
        self.data_times, self.model_times = [], []

    def start_round(self):
        self.order = torch.randperm(len(self.data), generator=self.gen)
        self.pos = 0

    def step(self):
        t0 = time.perf_counter()
        idx = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        x1, x2 = self.views(self.data.images[idx], self.gen)
        t1 = time.perf_counter()
        loss = self.method(x1, x2).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        t2 = time.perf_counter()
        self.data_times.append(t1 - t0)
        self.model_times.append(t2 - t1)

    def parts(self) -> StepParts:
        """The step cut into its regions (--regions), on batches of a fresh order."""
        order = torch.randperm(len(self.data), generator=self.gen)
        per_epoch = len(self.data) // self.batch

        def views(i):
            return self.views(self.data.images[order[(i % per_epoch) * self.batch :][: self.batch]], self.gen)

        return StepParts(views, lambda x: self.method(*x).loss, self.opt)


class LoaderPipeline:
    """(b) and (c): a DataLoader of per-image two-view transforms, then one model step."""

    def __init__(self, folder, transform, backbone_and_head, loss_fn, workers, batch):
        from torchvision.datasets import ImageFolder

        self.dataset = ImageFolder(str(folder), transform=transform)
        self.workers, self.batch = workers, batch
        self.model = backbone_and_head
        self.loss_fn = loss_fn
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.wait_times = []

    def start_round(self):
        self.it = None  # shut the previous round's workers down before starting new ones
        loader = DataLoader(self.dataset, batch_size=self.batch, shuffle=True, drop_last=True, num_workers=self.workers)
        self.it = iter(loader)

    def step(self):
        t0 = time.perf_counter()
        (x1, x2), _ = next(self.it)
        self.wait_times.append(time.perf_counter() - t0)
        loss = self.loss_fn(self.model(x1), self.model(x2))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


class TwoViews:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return self.transform(img), self.transform(img)


def torchvision_transform(mean, std):
    from torchvision.transforms import v2

    return TwoViews(
        v2.Compose(
            [
                v2.PILToTensor(),
                v2.RandomResizedCrop(SIZE, scale=(0.08, 1.0), antialias=True),
                v2.RandomHorizontalFlip(0.5),
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                v2.RandomGrayscale(0.2),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean, std),
            ]
        )
    )


def lightly_parts(cfg, mean, std):
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    transform = SimCLRTransform(
        input_size=SIZE,
        cj_prob=0.8,
        cj_strength=0.5,
        min_scale=0.08,
        random_gray_scale=0.2,
        gaussian_blur=0.0,
        hf_prob=0.5,
        normalize={"mean": mean, "std": std},
    )
    torch.manual_seed(0)
    backbone = build_model(cfg).backbone
    model = nn.Sequential(backbone, SimCLRProjectionHead(backbone.feature_dim, 512, 128))
    return transform, model, NTXentLoss(temperature=0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=CIFAR10 / "train",
        help="an ImageFolder train folder (<class>/<image>.jpg); --toy: synthetic where absent",
    )
    ap.add_argument("--images", type=int, default=5000, help="images in the subset (equal per class)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--width", type=int, default=16, help="the ResNet-18's width")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per setting and round")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over all settings")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader num_workers to try")
    ap.add_argument("--matmul-size", type=int, default=2048, help="side of the matrices of the peak GFLOP/s")
    ap.add_argument("--regions", action="store_true", help="also time sparsehead's step per region")
    ap.add_argument("--compile-views", action="store_true", help="sparsehead's views compiled (augment.compile)")
    args = parse_args(ap, TOY)
    batch = args.batch
    if args.images < batch * (args.steps + 1):
        ap.error(f"--images must be at least {batch * (args.steps + 1)} (a round's batches without repeats)")
    if args.toy and not args.data.is_dir():
        args.data = synthetic_images(temp_dir("sparsehead-bench-toy-"), args.images)
    if not args.data.is_dir():
        ap.error(f"no ImageFolder at {args.data}: pass --data (or --toy, which makes synthetic images)")
    root = subset_folder(args.data, args.images)
    overrides = config_overrides(root, batch, args.width, args.compile_views)
    cfg = config.load(None, overrides)

    t0 = time.perf_counter()
    datasets.load(cfg.data, "pretrain")  # decoded once into the uint8 cache, written to disk
    decode_seconds = time.perf_counter() - t0
    data = datasets.load(cfg.data, "pretrain")  # what every later run does: read the cache file
    cached_seconds = time.perf_counter() - t0 - decode_seconds
    mean, std = data.channel_stats()
    pipelines = {"sparsehead": SparseheadPipeline(cfg, data)}
    transform, model, loss = lightly_parts(cfg, mean, std)
    tv_method = build_model(cfg)
    for w in args.workers:
        pipelines[f"lightly w={w}"] = LoaderPipeline(root / "train", transform, model, loss, w, batch)
        pipelines[f"torchvision w={w}"] = LoaderPipeline(
            root / "train",
            torchvision_transform(mean, std),
            nn.Sequential(tv_method.backbone, tv_method.projector),
            lambda z1, z2: nt_xent(z1, z2, 0.5),
            w,
            batch,
        )

    times = {name: [] for name in pipelines}
    for _ in range(args.repeats):
        for name, p in pipelines.items():
            p.start_round()
            p.step()  # warm-up: worker start-up and first-touch allocations stay out of the timing
            if isinstance(p, SparseheadPipeline):
                p.data_times.pop(), p.model_times.pop()
            else:
                p.wait_times.pop()
            for _ in range(args.steps):
                t = time.perf_counter()
                p.step()
                times[name].append(time.perf_counter() - t)
            if isinstance(p, LoaderPipeline):
                p.it = None
            print(f"  {name}: {statistics.median(times[name][-args.steps :]):.3f} s/step this round", flush=True)

    # The step `sparsehead pretrain` takes (training.setup + train_step: its hooks, the guard, the collapse
    # monitor, fused Adam), on the same images: what a user's run gets, beside the bare step above.
    give_an_evaluation_split(root)
    run_rate = train_step_rate(None, [*overrides, "train.device=cpu"], args.steps * args.repeats, 1)["img_per_s"]
    peak = peak_matmul_gflops(args.matmul_size)
    sh = pipelines["sparsehead"]
    x = torch.zeros(batch, 3, SIZE, SIZE)
    with FlopCounterMode(display=False) as counter:
        sh.method(x, x).loss.backward()
    model_flops = counter.get_total_flops()

    rate = {name: batch / statistics.median(ts) for name, ts in times.items()}

    def best(prefix):
        return max((r, n) for n, r in rate.items() if n.startswith(prefix))

    data_share = sum(sh.data_times) / (sum(sh.data_times) + sum(sh.model_times))
    model_step = statistics.median(sh.model_times)
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"images: {len(data)} from {args.data}; decode into the uint8 cache once: {decode_seconds:.1f} s, "
        f"later runs read the cache file: {cached_seconds:.2f} s"
    )
    print(f"{'pipeline':<16} {'img/s':>7} {'s/step':>7}   (median of {args.repeats} x {args.steps} steps)")
    for name, r in rate.items():
        extra = ""
        p = pipelines[name]
        if isinstance(p, LoaderPipeline):
            extra = f"  data wait {statistics.median(p.wait_times):.3f} s/step"
        print(f"{name:<16} {r:7.1f} {batch / r:7.3f}{extra}")
    lightly_best, lightly_name = best("lightly")
    tv_best, tv_name = best("torchvision")
    print(f"{'pretrain step':<16} {run_rate:7.1f} {batch / run_rate:7.3f}  (training.setup + train_step)")
    print(f"ratio sparsehead / best lightly ({lightly_name}): {rate['sparsehead'] / lightly_best:.2f}x")
    print(f"ratio pretrain's step / best lightly ({lightly_name}): {run_rate / lightly_best:.2f}x")
    print(f"ratio sparsehead / best torchvision ({tv_name}): {rate['sparsehead'] / tv_best:.2f}x")
    print(
        f"sparsehead data share (index + views) of the step: {100 * data_share:.1f}% "
        f"(data {statistics.median(sh.data_times):.3f} s, model {model_step:.3f} s per step)"
    )
    print(
        f"model step: {model_flops / 1e9:.1f} GFLOP, {model_flops / model_step / 1e9:.1f} GFLOP/s; "
        f"peak float32 matmul {peak:.1f} GFLOP/s; fraction of peak {model_flops / model_step / 1e9 / peak:.2f}"
    )
    if args.regions:
        report = region_report(sh.parts(), torch.device("cpu"), args.steps, 1, args.matmul_size)
        views = "compiled" if args.compile_views else "eager"
        print_regions(f"sparsehead step ({views} views, batch {batch})", report)


if __name__ == "__main__":
    main()
