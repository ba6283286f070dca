"""The next cell of the GPU accuracy ledger (docs/results/gpu.json), sized to a device-time budget.

    python3 scripts/gpu_accuracy.py --data ROOT --out OUTDIR --budget-s 300 [--throughput SIMCLR.json]
    python3 scripts/gpu_accuracy.py --data ROOT --out OUTDIR --budget-s 60 --dry-run   # toy size, CPU
    python3 scripts/gpu_accuracy.py --record OUTDIR/NAME.cell.json   # back here: the cell into the ledger

ROOT is an ImageFolder root with train/ and test/ (CIFAR-10's JPEGs). The epochs come from the
measured images/s of the same configuration (part (a) of benchmarks/gpu_throughput.py, read from its
throughput_simclr_*.json; a conservative guess without it), so the run and its closing k-NN fit the
budget. Writes OUTDIR/NAME.cell.json (the cell, its epochs, the machine, its results) and
OUTDIR/NAME.metrics.jsonl (the run's log, committed as docs/results/gpu/NAME.metrics.jsonl); the run
folder itself (checkpoints) stays in a temporary folder. `--record` copies a done cell's numbers into
the ledger and marks it done.
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
from datetime import datetime, timezone
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
    """sparsehead's images/s in a SimCLR part's JSON: its training step as the cell runs it (the config as it
    is, `eager`), else the bare step (older files; the one-file layout before issue 36 nests it)."""
    if path is None or not path.is_file():
        return None
    results = json.loads(path.read_text())
    if rate := results.get("train_step", {}).get("eager", {}).get("img_per_s"):
        return rate
    part = results.get("sparsehead") or results.get("simclr_resnet18", {}).get("sparsehead", {})
    return part.get("img_per_s")


def machine() -> str:
    """'one <GPU>, torch <version>, <date>', as the ledger's cells name theirs."""
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    return f"one {gpu}, torch {torch.__version__}, {datetime.now(timezone.utc).date().isoformat()}"


def record_cell(cell_path: Path, ledger_path: Path) -> None:
    """The done cell of cell_path (this script's NAME.cell.json) into the ledger, its status 'done'."""
    cell = json.loads(cell_path.read_text())
    if cell["dry_run"] or cell["status"] != "done":
        sys.exit(
            f"{cell_path}: a {'dry run' if cell['dry_run'] else cell['status'] + ' run'} is no result; record a done GPU cell"
        )
    ledger = json.loads(ledger_path.read_text())
    entry = next((c for c in ledger["cells"] if c["name"] == cell["name"]), None)
    if entry is None:
        sys.exit(f"{cell_path}: the ledger {ledger_path} has no cell {cell['name']!r}")
    entry.update(
        status="done",
        epochs=cell["epochs"],
        **{k: v for k, v in cell["results"].items() if k.startswith("knn")},
        steps=cell["results"]["steps"],
        wall_s=round(cell["wall_s"], 1),
        machine=cell["machine"],
    )
    ledger_path.write_text(json.dumps(ledger, indent=2) + "\n")
    print(f"{ledger_path}: {cell['name']} done ({cell['epochs']} epochs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", type=Path, help="a done NAME.cell.json: write it into the ledger, run nothing")
    ap.add_argument("--ledger", type=Path, default=LEDGER, help=argparse.SUPPRESS)  # tests point it elsewhere
    ap.add_argument("--data", type=Path, help="ImageFolder root with train/ and test/")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--budget-s", type=float, help="wall seconds this cell may take")
    ap.add_argument("--throughput", type=Path, help="the SimCLR part's JSON of the same machine")
    ap.add_argument("--epochs", type=int, help="this many epochs instead of the budget's (to match a done cell)")
    ap.add_argument("--dry-run", action="store_true", help="toy size on the CPU (tiny width, 2 epochs)")
    args = ap.parse_args()
    if args.record:
        return record_cell(args.record, args.ledger)
    if args.data is None or args.out is None or args.budget_s is None:
        ap.error("--data, --out and --budget-s are required to run a cell")
    start = time.monotonic()
    cell = next_cell(json.loads(args.ledger.read_text()))
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
    if (run_dir / "metrics.jsonl").is_file():
        shutil.copy(run_dir / "metrics.jsonl", args.out / f"{cell['name']}.metrics.jsonl")
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else None
    record = {
        **cell,
        "status": "done" if results else "failed",
        "exit": rc,
        "epochs": epochs,
        "img_per_s_used": rate,
        "img_per_s_measured": img_per_s,
        "wall_s": time.monotonic() - start,
        "machine": machine(),
        "dry_run": args.dry_run,
        "results": results,
    }
    (args.out / f"{cell['name']}.cell.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    sys.exit(0 if results else 1)


if __name__ == "__main__":
    main()
