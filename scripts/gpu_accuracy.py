"""The next cell of the GPU accuracy ledger (docs/results/gpu.json), sized to a device-time budget.

    python3 scripts/gpu_accuracy.py --data ROOT --out OUTDIR --budget-s 300 [--throughput GPU_CHECK.json]
    python3 scripts/gpu_accuracy.py --data ROOT --out OUTDIR --budget-s 60 --dry-run   # toy size, CPU

ROOT is an ImageFolder root with train/ and test/ (CIFAR-10's JPEGs). The epochs come from the
measured images/s of the same configuration (part (a) of benchmarks/gpu_throughput.py, read from
GPU_CHECK.json; a conservative guess without it), so the run and its closing k-NN fit the budget.
Writes OUTDIR/cell.json (the cell, its epochs, its results) and copies results.json and
metrics.jsonl there; the run folder itself (checkpoints) stays in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEDGER = REPO / "docs" / "results" / "gpu.json"
CONFIG = REPO / "configs" / "gpu_cifar10_simclr.yaml"
FIXED_COST_S = 60  # start-up, data decode, cuDNN autotuning and the closing k-NN, measured loosely
SAFETY = 0.8  # share of the rest spent on the epochs: the throughput figure is a short benchmark's
GUESS_IMG_PER_S = 4000.0  # without a measurement: well under what an H200 should do


def next_cell(ledger: dict) -> dict:
    todo = [c for c in ledger["cells"] if c["status"] == "todo"]
    if not todo:
        sys.exit("every cell of the ledger is done")
    return todo[0]


def measured_img_per_s(path: Path | None) -> float | None:
    if path is None or not path.is_file():
        return None
    part = json.loads(path.read_text()).get("simclr_resnet18", {}).get("sparsehead", {})
    return part.get("img_per_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="ImageFolder root with train/ and test/")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, required=True, help="wall seconds this cell may take")
    ap.add_argument("--throughput", type=Path, help="gpu_check.json of the same machine")
    ap.add_argument("--epochs", type=int, help="this many epochs instead of the budget's (to match a done cell)")
    ap.add_argument("--dry-run", action="store_true", help="toy size on the CPU (tiny width, 2 epochs)")
    args = ap.parse_args()
    start = time.monotonic()
    cell = next_cell(json.loads(LEDGER.read_text()))
    n_train = sum(1 for p in (args.data / "train").rglob("*") if p.is_file())
    img_per_s = measured_img_per_s(args.throughput)
    rate = img_per_s or GUESS_IMG_PER_S
    epochs = max(1, math.floor((args.budget_s - FIXED_COST_S) * SAFETY * rate / n_train))
    if args.epochs:
        epochs = args.epochs
    toy = [
        "model.width=4",
        "head.hidden_dim=32",
        "head.out_dim=16",
        "train.batch_size=64",
        "train.device=cpu",
        "train.precision=fp32",
    ]
    if args.dry_run:
        epochs = 2
    overrides = [
        f"data.root={args.data}",
        f"train.epochs={epochs}",
        f"optim.warmup_epochs={min(10, max(1, epochs // 10))}",
        "train.progress=false",
        *cell["overrides"],
        *(toy if args.dry_run else []),
    ]
    run_dir = Path(tempfile.mkdtemp(prefix="sparsehead-gpu-cell-")) / cell["name"]
    cmd = [
        sys.executable,
        "-m",
        "sparsehead",
        "pretrain",
        "--config",
        str(CONFIG),
        "--run-dir",
        str(run_dir),
        *overrides,
    ]
    print(" ".join(cmd), flush=True)
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    left = args.budget_s - (time.monotonic() - start)
    try:
        rc = subprocess.run(cmd, env=env, timeout=max(10.0, left)).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "metrics.jsonl"):
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, args.out / name)
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else None
    record = {
        **cell,
        "status": "done" if results else "failed",
        "exit": rc,
        "epochs": epochs,
        "img_per_s_used": rate,
        "img_per_s_measured": img_per_s,
        "wall_s": time.monotonic() - start,
        "dry_run": args.dry_run,
        "results": results,
    }
    (args.out / "cell.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    sys.exit(0 if results else 1)


if __name__ == "__main__":
    main()
