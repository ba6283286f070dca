"""Peak memory of `sparsehead evaluate --protocol knn` on a streamed set, by the size of its training
split: a streamed evaluation must hold one batch of images at a time, so its peak RSS should not
grow with the number of images (only the features, N x d floats, do).

One tiny run is pretrained on the smallest set, then evaluated on each size (train/ of N CIFAR-10
JPEGs linked from ../shared/data/cifar10, test/ the same 1,000 test images each time), each
`python -m sparsehead evaluate` a fresh process: its peak RSS is the one os.wait4 reports (the
largest of it and its DataLoader workers), and the peak of the whole process tree summed is sampled
from /proc every 0.1 s.

    python benchmarks/eval_memory.py --sizes 2000,20000   # docs/performance.md
    python benchmarks/eval_memory.py --toy                # 40 and 80 images (synthetic where CIFAR-10 is absent)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from _data import CIFAR10, REPO, link_subset, synthetic_images, temp_dir
from _toy import parse_args

TOY = dict(sizes="40,80", test_images=20, k=10)
TINY_MODEL = ["model.width=4", "head.hidden_dim=16", "head.out_dim=8", "train.threads=1", "train.progress=false"]


def make_set(root: Path, n: int, test: Path) -> Path:
    """root/train: n images (equal per class) of CIFAR-10's train/, synthetic where it is absent;
    root/test: a link to the shared test folder."""
    if (CIFAR10 / "train").is_dir():
        link_subset(CIFAR10 / "train", root / "train", n)
    else:
        synthetic_images(root / "train", n)
    (root / "test").symlink_to(test)
    return root


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants, now (0 for a process that has gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            continue  # gone between the listing and the read
    return total


def measured(cmd: list[str], env: dict) -> tuple[float, float, float]:
    """Run `cmd`; (seconds, peak RSS of its largest process in MB, peak RSS of its process tree in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def sample():
        while not done.wait(0.1):
            peak[0] = max(peak[0], tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, peak[0] / 2**20


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2000,20000", help="training images of each evaluated set, comma-separated")
    ap.add_argument("--test-images", type=int, default=1000, help="test images (the same for every size)")
    ap.add_argument("--workers", type=int, default=2, help="data.workers of the evaluation")
    ap.add_argument("--k", type=int, default=200, help="k of the weighted k-NN vote (--k-weighted)")
    args = parse_args(ap, TOY, argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = temp_dir("sparsehead-evalmem-")
    test = work / "test"
    if (CIFAR10 / "test").is_dir():
        link_subset(CIFAR10 / "test", test, args.test_images)
    else:
        synthetic_images(test, args.test_images, seed=1)
    roots = {n: make_set(work / f"set{n}", n, test) for n in sizes}
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    data = ["data.source=imagefolder", "data.storage=stream", "data.image_size=32", f"data.cache_dir={work / 'cache'}"]
    pretrain = [sys.executable, "-m", "sparsehead", "pretrain", *data, *TINY_MODEL, f"data.root={roots[sizes[0]]}"]
    pretrain += [
        "data.workers=1",
        "train.batch_size=16",
        "train.max_steps=2",
        f"train.out_dir={work}",
        "train.run_name=r",
    ]
    subprocess.run(pretrain, env=env, check=True, capture_output=True)
    print(f"sparsehead evaluate --protocol knn, data.storage=stream, {args.workers} workers, 32 px, width-4 ResNet-18")
    print("train images | test images | seconds | peak RSS, largest process (MB) | peak RSS, process tree (MB)")
    for n in sizes:
        cmd = [sys.executable, "-m", "sparsehead", "evaluate", str(work / "r"), "--protocol", "knn", "--device", "cpu"]
        cmd += ["--k-weighted", str(args.k), "--data", f"root={roots[n]}", f"workers={args.workers}"]
        seconds, largest, tree = measured(cmd, env)
        print(f"{n} | {args.test_images} | {seconds:.1f} | {largest:.0f} | {tree:.0f}", flush=True)


if __name__ == "__main__":
    main()
