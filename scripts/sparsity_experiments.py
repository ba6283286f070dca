"""Why the paper's SparseHead penalty does not make the head sparse, and what does (issue 17).

Four parts, every number from this script (or from plain `sparsehead pretrain` runs it starts):

  invariance   for every method: the loss after scaling the penalised layer (weight and bias) by c,
               the cosine of its gradient with the weight (0 for a scale-invariant loss, Euler), and
               the gradient's norm (1/c for a scale-invariant loss). tests/test_sparsity_scale_invariance.py
               asserts the same classification.
  efflr        the effective learning rate of the scale-invariant last layer: the angle it turns per
               optimiser step after scaling it by c, for Adam, AdamW, SGD with momentum and LARS
               (SimCLR on the demo data).
  optimizers   digits runs (configs/demo.yaml, train.epochs=20) under each optimiser with no
               SparseHead, the paper's penalty at lambda 1e-2, the proximal step and sparsity.mode=prune:
               how the column norms of the last layer are distributed (top-10% share, Gini), support.
  demo         the full demo (configs/demo.yaml, 30 epochs) as it is (lambda 1e-4, penalty) and with
               sparsity.mode=prune sparsity.target_support=0.25: the done criterion of issue 17.
  cifar        the same two on real CIFAR-10 at the reproduction's CPU scale (configs/reproduce/base.yaml,
               5 epochs, seed 0; not run by default: --parts cifar).

    python scripts/sparsity_experiments.py run                       # every part, seeds 0 1 (demo: 0 1 2)
    python scripts/sparsity_experiments.py run --parts invariance efflr
    python scripts/sparsity_experiments.py run --parts optimizers --seeds 0
    python scripts/sparsity_experiments.py plan                      # the pretrain commands, not run
    python scripts/sparsity_experiments.py write                     # tables (+ figure) from the results
    python scripts/sparsity_experiments.py write --doc docs/sparsehead.md   # ... into the doc's marked section

Resumable: finished runs (results.json present) are skipped, a killed pretraining resumes from its
last checkpoint, and the measured parts are stored in OUT/results.json as soon as each is done.
Training runs use one thread (train.threads=1).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
DEFAULT_OUT = Path(os.environ.get("SPARSITY_EXPERIMENTS_OUT", Path.home() / "sparse-exp"))
FIGURE = REPO / "docs" / "figures" / "sparsity" / "column_norms.png"
BEGIN, END = "<!-- sparsity-experiments:begin -->", "<!-- sparsity-experiments:end -->"

# --- the optimiser grid: settings of each optimiser on the demo ---------------------------------
# Adam is the demo's (the paper's lr 3e-3, weight decay 1e-6). AdamW gets torch's default decoupled
# weight decay 1e-2 (with 1e-6 it would be Adam). SGD (momentum 0.9) lr 0.1 and LARS (momentum 0.9,
# eta 1e-3) lr 2 were chosen before any training run, from the mean relative step of the weight
# matrices over the first 4 steps from the initialisation (Adam 4e-2 falling to 2e-2, SGD at 0.1
# 1e-2 rising to 2e-2, LARS at 1 1e-3 rising to 2e-3): momentum multiplies SGD's and LARS's steps
# by up to 10 over the first tens of steps. The `efflr` table's last column shows those steps.
OPTIMIZERS = {
    "adam": ["optim.name=adam"],
    "adamw": ["optim.name=adamw", "optim.weight_decay=1e-2"],
    "sgd": ["optim.name=sgd", "optim.lr=0.1"],
    "lars": ["optim.name=lars", "optim.lr=2.0"],
}
# The proximal step's lambda: the paper's objective (lambda 1e-2, the same as the penalty) where the
# step is the proximal gradient step (SGD, and LARS whose lr * lambda it also uses); under Adam(W)
# the step lr * lambda must be compared with Adam's ~lr move per weight, so lambda is of order 1-10
# (docs/sparsehead.md): 4.
PROXIMAL_LAM = {"adam": 4.0, "adamw": 4.0, "sgd": 1e-2, "lars": 1e-2}
PENALTY_LAM = 1e-2
TARGET = 0.25
REGIMES = {
    "none": lambda opt: ["sparsity.lam=0"],
    "penalty": lambda opt: [f"sparsity.lam={PENALTY_LAM:g}"],
    "proximal": lambda opt: ["sparsity.mode=proximal", f"sparsity.lam={PROXIMAL_LAM[opt]:g}"],
    "prune": lambda opt: ["sparsity.mode=prune", "sparsity.lam=0", f"sparsity.target_support={TARGET}"],
}
GRID_EPOCHS = 20
COMMON = ["train.threads=1", "train.progress=false"]

# --- the demo (done criterion) ------------------------------------------------------------------
DEMO_CELLS = {
    "demo-paper": [],  # configs/demo.yaml as shipped: lambda 1e-4, penalty
    "demo-prune": ["sparsity.mode=prune", f"sparsity.target_support={TARGET}"],
}
DEMO_SEEDS = (0, 1, 2)

# --- CIFAR-10 at CPU scale: the reproduction's base (5,000 images, 5 epochs, head 128 -> 512 -> 128) -
CIFAR_BASE = REPO / "configs" / "reproduce" / "base.yaml"
CIFAR_CELLS = {
    "cifar-paper": ["method.name=simclr", "sparsity.lam=1e-4"],  # = reproduce.py's simclr-mlp-lam0.0001
    "cifar-prune": [
        "method.name=simclr",
        "sparsity.lam=1e-4",
        "sparsity.mode=prune",
        f"sparsity.target_support={TARGET}",
    ],  # = reproduce.py's simclr-mlp-prune0.25
}
CIFAR_SEEDS = (0,)


def cells(part: str) -> dict[str, list[str]]:
    if part == "optimizers":
        return {
            f"{opt}-{reg}": [*OPTIMIZERS[opt], *make(opt), f"train.epochs={GRID_EPOCHS}", "train.log_every=5"]
            for opt in OPTIMIZERS
            for reg, make in REGIMES.items()
        }
    if part == "demo":  # log every step: the criterion is on the support over the last quarter
        return {name: [*ov, "train.log_every=1"] for name, ov in DEMO_CELLS.items()}
    if part == "cifar":
        return {name: [*ov, "train.log_every=1"] for name, ov in CIFAR_CELLS.items()}
    raise KeyError(part)


def pretrain_cmd(out: Path, part: str, cell: str, seed: int) -> tuple[list[str], Path]:
    run = out / "runs" / f"{cell}-s{seed}"
    base = (CIFAR_BASE if part == "cifar" else DEMO).relative_to(REPO)
    return [
        sys.executable,
        "-m",
        "sparsehead",
        "pretrain",
        "--config",
        str(base),
        *cells(part)[cell],
        *COMMON,
        f"train.seed={seed}",
        "--run-dir",
        str(run),
    ], run


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


# --- statistics of a head's columns ---------------------------------------------------------------


def column_stats(norms: list[float], threshold: float = 1e-3) -> dict:
    import torch

    from sparsehead.sparsity import gini, top_share

    top = max(norms)
    return {
        "columns": len(norms),
        "top10_share": top_share(torch.tensor(norms)),
        "gini": gini(torch.tensor(norms)),
        "support": sum(v >= threshold * top for v in norms) if top > 0 else 0,
        "exact_zeros": sum(v == 0 for v in norms),
        "cols_ge_0.1max": sum(v >= 0.1 * top for v in norms) if top > 0 else 0,
        "l21": sum(norms),
        "frobenius": math.sqrt(sum(v * v for v in norms)),
    }


def summarize_run(run: Path) -> dict:
    """Column statistics of the trained head's last layer, k-NN, and the support over time."""
    sys.path.insert(0, str(REPO / "src"))
    from sparsehead.runs.model import load_trained
    from sparsehead.sparsity import column_norms, penalized_layers

    trained = load_trained(run)
    weight = penalized_layers(trained.method.sparse_head(), "last")[0].weight.detach()
    norms = column_norms(weight).double().tolist()
    results = json.loads((run / "results.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    support = [(r["step"], r["head/support"]) for r in records if "head/support" in r]
    total = results["steps"]
    last_quarter = [s for step, s in support if step > 0.75 * total]
    times = json.loads((run / "wall_seconds.json").read_text()) if (run / "wall_seconds.json").is_file() else {}
    return {
        "knn5": results["knn5_top1"],
        "knn200": results["knn200_weighted_top1"],
        "steps": total,
        **column_stats(norms),
        "support_last_quarter": [min(last_quarter), max(last_quarter)] if last_quarter else None,
        "support_trace": support,
        "sorted_norms": sorted(norms, reverse=True),
        "wall_s": times.get("pretrain"),
    }


# --- the measured parts ---------------------------------------------------------------------------


def scale_layer_(layer, c: float) -> None:
    import torch

    with torch.no_grad():
        layer.weight.mul_(c)
        if getattr(layer, "bias", None) is not None:
            layer.bias.mul_(c)


def layer_vector(layer):
    import torch

    parts = [layer.weight.reshape(-1)]
    if getattr(layer, "bias", None) is not None:
        parts.append(layer.bias.reshape(-1))
    return torch.cat(parts)


def measure_invariance() -> dict:
    """Per method (the tiny test model, float64, random inputs): loss change, cos(grad, W), |grad|."""
    import torch

    sys.path.insert(0, str(REPO / "src"))
    from sparsehead import config
    from sparsehead.methods import METHODS, params_of
    from sparsehead.runs.model import build_model
    from sparsehead.sparsity import penalized_layers

    torch.set_num_threads(1)
    tiny = [
        "data.source=digits",
        "data.image_size=16",
        "model.width=8",
        "head.hidden_dim=64",
        "head.out_dim=16",
        "train.batch_size=64",
    ]
    method_keys = {"predictor_hidden_dim": 32, "queue_size": 256}  # where the method has them
    out = {}
    for name in METHODS:
        keys = [f"method.{k}={v}" for k, v in method_keys.items() if k in params_of(name)]
        cfg = config.load(
            None, tiny + [f"method.name={name}", f"sparsity.lam={0 if name == 'directclr' else 1e-4}", *keys]
        )
        torch.manual_seed(0)
        model = build_model(cfg).double().train()
        g = torch.Generator().manual_seed(1)
        x1, x2 = (torch.randn(64, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2))
        if not penalized_layers(model.sparse_head(), "last"):
            out[name] = {"head": False}
            continue

        def at(c):
            m = copy.deepcopy(model)
            layer = penalized_layers(m.sparse_head(), "last")[0]
            scale_layer_(layer, c)
            loss = m(x1, x2).loss
            loss.backward()
            w = layer_vector(layer).detach()
            grad = torch.cat(
                [layer.weight.grad.reshape(-1)]
                + ([layer.bias.grad.reshape(-1)] if getattr(layer, "bias", None) is not None else [])
            )
            return loss.item(), (grad @ w / (grad.norm() * w.norm())).item(), grad.norm().item()

        base = at(1.0)
        row = {"head": True, "loss": base[0], "cos_grad_w": base[1], "scales": {}}
        for c in (0.1, 0.5, 2.0, 10.0):
            loss, cos, gnorm = at(c)
            row["scales"][str(c)] = {
                "rel_loss_change": abs(loss - base[0]) / max(abs(base[0]), 1.0),
                "grad_norm_ratio": gnorm / base[2],
            }
        out[name] = row
        print(f"  invariance {name}: cos(g, W) = {base[1]:.1e}", flush=True)
    return out


EFFLR_SCALES = (2.0, 1.0, 0.5, 0.25, 0.125)
EFFLR_STEPS = 4


def angle(a, b) -> float:
    cos = (a @ b / (a.norm() * b.norm())).clamp(-1, 1)
    return math.acos(cos.item())


def log_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.mean(lx), statistics.mean(ly)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / sum((x - mx) ** 2 for x in lx)


def measure_efflr() -> dict:
    """The angle (radians) the penalised layer turns per optimiser step, after scaling it by c.

    SimCLR (scale-invariant) on the demo: the model after 10 Adam steps (the same for every row),
    then for each optimiser and c a copy with the last head layer (weight and bias) scaled by c, a
    fresh optimiser at the grid's settings (constant lr, no schedule) and EFFLR_STEPS steps on the
    same fixed batches. Reported: the mean angle between consecutive weights W of the layer (what
    the penalty acts on) and between consecutive (W, b); and, at c = 1, the mean relative step
    ||dP|| / ||P|| over all weight matrices P (the lr calibration of the grid)."""
    import torch

    sys.path.insert(0, str(REPO / "src"))
    from sparsehead import config
    from sparsehead.data import datasets
    from sparsehead.data.views import ViewGenerator
    from sparsehead.runs.model import build_model
    from sparsehead.sparsity import penalized_layers
    from sparsehead.training.optim import build_optimizer

    torch.set_num_threads(1)
    cfg = config.load(str(DEMO), ["train.threads=1"])
    data = datasets.load(cfg.data, "pretrain")
    mean, std = data.channel_stats()
    views = ViewGenerator(cfg.augment, cfg.data.image_size, mean, std)
    g = torch.Generator().manual_seed(0)
    batches = [views(data.images[torch.randperm(len(data), generator=g)[:256]], g) for _ in range(10 + EFFLR_STEPS)]
    torch.manual_seed(0)
    model = build_model(cfg).train()
    warm = build_optimizer(cfg.optim, model)
    for x1, x2 in batches[:10]:
        loss = model(x1, x2).loss
        warm.zero_grad()
        loss.backward()
        warm.step()
    rows = {}
    for opt, overrides in OPTIMIZERS.items():
        ocfg = config.load(str(DEMO), overrides).optim
        turn_w, turn_wb, rel_steps = {}, {}, None
        for c in EFFLR_SCALES:
            m = copy.deepcopy(model)
            layer = penalized_layers(m.sparse_head(), "last")[0]
            scale_layer_(layer, c)
            o = build_optimizer(ocfg, m)
            mats = [p for p in m.parameters() if p.ndim > 1 and p.requires_grad]
            tw, twb, rel = [], [], []
            for x1, x2 in batches[10:]:
                w0, wb0 = layer.weight.detach().reshape(-1).clone(), layer_vector(layer).detach().clone()
                before = [p.detach().clone() for p in mats]
                loss = m(x1, x2).loss
                o.zero_grad()
                loss.backward()
                o.step()
                tw.append(angle(w0, layer.weight.detach().reshape(-1)))
                twb.append(angle(wb0, layer_vector(layer).detach()))
                rel.append(sum(((p - b).norm() / b.norm()).item() for p, b in zip(mats, before)) / len(mats))
            turn_w[str(c)], turn_wb[str(c)] = statistics.mean(tw), statistics.mean(twb)
            if c == 1.0:
                rel_steps = rel
        small = [c for c in EFFLR_SCALES if c >= 0.5]  # small angles, before the turn saturates
        rows[opt] = {
            "angle_w": turn_w,
            "angle_wb": turn_wb,
            "rel_step_c1": rel_steps,
            "slope_w": log_slope(small, [turn_w[str(c)] for c in small]),
            "slope_wb": log_slope(small, [turn_wb[str(c)] for c in small]),
        }
        print(f"  efflr {opt}: slope of W's angle {rows[opt]['slope_w']:.2f}", flush=True)
    return {"simclr": rows}


# --- running ---------------------------------------------------------------------------------------


def load_results(out: Path) -> dict:
    path = out / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(out: Path, updates: dict, part: str | None = None) -> dict:
    """Merge `updates` into OUT/results.json (into results[part] when given) and return the whole:
    read, update, write on every save, so two invocations (e.g. the grid and a measurement) can
    run side by side without undoing each other's results."""
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(out)
    (results.setdefault(part, {}) if part else results).update(updates)
    tmp = out / f"results.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out / "results.json")
    return results


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }


def run_training(out: Path, part: str, seeds, dry: bool, results: dict) -> None:
    default = {"demo": DEMO_SEEDS, "cifar": CIFAR_SEEDS}.get(part, (0, 1))
    part_seeds = seeds or default
    for seed in part_seeds:  # seed-major: a partial grid has one seed of every cell first
        for cell in cells(part):
            cmd, run = pretrain_cmd(out, part, cell, seed)
            key = f"{cell}-s{seed}"
            if dry:
                print("PYTHONPATH=src " + " ".join(["python", *cmd[1:]]))
                continue
            if not (run / "results.json").is_file():
                print(f"[{time.strftime('%H:%M:%S')}] {key}", flush=True)
                start = time.perf_counter()
                proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{key} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
                times_path = run / "wall_seconds.json"
                times = json.loads(times_path.read_text()) if times_path.is_file() else {}
                times["pretrain"] = times.get("pretrain", 0.0) + time.perf_counter() - start
                times_path.write_text(json.dumps(times) + "\n")
            if key not in results.get(part, {}):
                results = save_results(
                    out, {key: {"cell": cell, "seed": seed, "overrides": cells(part)[cell], **summarize_run(run)}}, part
                )


def cmd_run(args) -> None:
    out = Path(args.out)
    results = load_results(out) if args.dry else save_results(out, {"machine": machine()})
    for part in args.parts:
        if part in ("invariance", "efflr"):
            if args.dry:
                continue
            if part not in results or args.redo:
                print(f"[{time.strftime('%H:%M:%S')}] {part}", flush=True)
                start = time.perf_counter()
                value = measure_invariance() if part == "invariance" else measure_efflr()
                results = save_results(out, {part: value, part + "_wall_s": time.perf_counter() - start})
        else:
            run_training(out, part, args.seeds, args.dry, results)


# --- writing -------------------------------------------------------------------------------------


def mean_sd(values: list[float], fmt: str = "{:.3f}") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


INVARIANCE_CLASS = {True: "yes, exactly", "bn": "yes, up to BatchNorm's eps", False: "no"}


def invariance_table(inv: dict) -> list[str]:
    lines = [
        "| method | loss change at c = 0.1 / 0.5 / 2 / 10 | cosine of the layer's gradient with the layer | gradient norm over that at c = 1, at c = 0.1 / 10 | scale-invariant |",
        "|---|---|---|---|---|",
    ]
    for name, row in inv.items():
        if not row["head"]:
            lines.append(f"| {name} | no projection head (nothing to penalise) | - | - | - |")
            continue
        ch = [row["scales"][c]["rel_loss_change"] for c in ("0.1", "0.5", "2.0", "10.0")]
        worst = max(ch)
        verdict = (
            INVARIANCE_CLASS[True]
            if worst < 1e-12
            else INVARIANCE_CLASS["bn"]
            if worst < 1e-1 and abs(row["cos_grad_w"]) < 1e-3
            else INVARIANCE_CLASS[False]
        )
        gr = row["scales"]
        lines.append(
            f"| {name} | {' / '.join(f'{v:.0e}' for v in ch)} | {row['cos_grad_w']:.0e} | "
            f"{gr['0.1']['grad_norm_ratio']:.3g} / {gr['10.0']['grad_norm_ratio']:.3g} | {verdict} |"
        )
    return lines


def efflr_table(eff: dict) -> list[str]:
    scales = [str(c) for c in EFFLR_SCALES]
    lines = [
        f"| optimiser | angle of W per step (rad) at c = {' / '.join(scales)} | slope (c = 2 .. 0.5) | "
        f"angle of (W, b) at c = {' / '.join(scales)} | slope | relative step of the weight matrices at c = 1 |",
        "|---|---|---|---|---|---|",
    ]
    for method, rows in eff.items():
        for opt, row in rows.items():
            aw = " / ".join(f"{row['angle_w'][c]:.3f}" for c in scales)
            awb = " / ".join(f"{row['angle_wb'][c]:.3f}" for c in scales)
            lines.append(
                f"| {opt} | {aw} | {row['slope_w']:.2f} | {awb} | {row['slope_wb']:.2f} | "
                f"{statistics.mean(row['rel_step_c1']):.1e} |"
            )
    return lines


def grid_table(runs: dict) -> list[str]:
    lines = [
        "| optimiser | SparseHead | overrides | seeds | top-10% share | Gini | support (>= 1e-3 max) | exact zeros | columns >= 0.1 max | L2,1 | Frobenius | 5-NN |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for opt in OPTIMIZERS:
        for reg in REGIMES:
            rows = [r for r in runs.values() if r["cell"] == f"{opt}-{reg}"]
            if not rows:
                continue

            def col(k):
                return [float(r[k]) for r in rows]

            ov = " ".join(f"`{o}`" for o in OPTIMIZERS[opt] + REGIMES[reg](opt))
            lines.append(
                f"| {opt} | {reg} | {ov} | {len(rows)} | {mean_sd(col('top10_share'), '{:.3f}')} | "
                f"{mean_sd(col('gini'), '{:.3f}')} | {mean_sd(col('support'), '{:.1f}')} | "
                f"{mean_sd(col('exact_zeros'), '{:.1f}')} | {mean_sd(col('cols_ge_0.1max'), '{:.1f}')} | "
                f"{mean_sd(col('l21'), '{:.2f}')} | {mean_sd(col('frobenius'), '{:.3f}')} | "
                f"{mean_sd(col('knn5'), '{:.3f}')} |"
            )
    return lines


def demo_table(runs: dict, cells_: dict = DEMO_CELLS) -> list[str]:
    columns = next(iter(runs.values()))["columns"] if runs else 256
    lines = [
        f"| run | seed | support at the end (of {columns}) | min / max over the last quarter | exact zeros | top-10% share | Gini | 5-NN | k=200 weighted | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in runs.items():
        lq = r["support_last_quarter"]
        wall = f"{r['wall_s'] / 60:.1f}" if r.get("wall_s") else "-"
        lines.append(
            f"| {r['cell']} | {r['seed']} | {r['support']} | {lq[0]} / {lq[1]} | {r['exact_zeros']} | "
            f"{r['top10_share']:.3f} | {r['gini']:.3f} | {r['knn5']:.3f} | {r['knn200']:.3f} | {wall} |"
        )
    for cell in cells_:
        rows = [r for r in runs.values() if r["cell"] == cell]
        if len(rows) > 1:
            lines.append(
                f"| {cell}, mean ± sd | {len(rows)} seeds | {mean_sd([r['support'] for r in rows], '{:.1f}')} | "
                f"| | | | {mean_sd([r['knn5'] for r in rows])} | {mean_sd([r['knn200'] for r in rows])} | |"
            )
    return lines


def write_figure(runs: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(OPTIMIZERS), figsize=(3.0 * len(OPTIMIZERS), 2.6), sharey=True)
    for ax, opt in zip(axes, OPTIMIZERS):
        for reg in REGIMES:
            r = runs.get(f"{opt}-{reg}-s0")
            if r is None:
                continue
            norms = r["sorted_norms"]
            top = norms[0] or 1.0
            ax.plot(range(1, len(norms) + 1), [max(v / top, 1e-4) for v in norms], label=reg)
        ax.set_yscale("log")
        ax.set_ylim(1e-4, 1.5)
        ax.set_title(opt, fontsize=9)
        ax.set_xlabel("column rank", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("norm / largest (1e-4 = zero)", fontsize=8)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def render(results: dict) -> str:
    m = results.get("machine", {})
    lines = [
        f"Generated by `python scripts/sparsity_experiments.py write --doc docs/sparsehead.md` from "
        f"`python scripts/sparsity_experiments.py run`. Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} "
        f"cores ({m.get('machine', '?')}), no GPU, torch {m.get('torch', '?')} (CPU), shared with other jobs.",
        "",
    ]
    if "invariance" in results:
        lines += [
            "### (a) Which losses ignore the scale of the penalised layer",
            "",
            "The tiny test model (digits config, width 8, head 64 -> 64 -> 16, float64, 64 random "
            "images), the last head layer's weight and bias multiplied by c. Loss change = "
            "|L(c) - L(1)| / max(|L(1)|, 1).",
            "",
            *invariance_table(results["invariance"]),
            "",
        ]
    if "efflr" in results:
        lines += [
            "### (c) The effective learning rate of a scale-invariant layer",
            "",
            f"SimCLR on the demo: the model after 10 Adam steps, the last head layer (weight and bias) "
            f"scaled by c, a fresh optimiser (the grid's settings, constant lr) for {EFFLR_STEPS} steps on "
            "fixed batches; the mean angle the layer's weight W (and (W, b)) turns per step. Slope = "
            "d log(angle) / d log(c) over c = 2, 1, 0.5 (small angles).",
            "",
            *efflr_table(results["efflr"]),
            "",
        ]
    if "optimizers" in results:
        lines += [
            "### (b) Column norms of the last head layer under each optimiser",
            "",
            f"`configs/demo.yaml` (SimCLR, head 128 -> 256 -> 64: 256 columns) with `train.epochs={GRID_EPOCHS}` "
            f"({GRID_EPOCHS * 5} steps) and the overrides shown; mean ± sd over seeds. top-10% share = "
            "share of the L2,1 norm held by the 26 largest columns (0.1 if all are equal); Gini "
            "0 = all equal, 0.75 = 64 equal columns and 192 zeros.",
            "",
            *grid_table(results["optimizers"]),
            "",
        ]
        if FIGURE.is_file():
            lines += [
                f"![sorted column norms](figures/sparsity/{FIGURE.name})",
                "",
                "*Seed 0: the 256 column norms of the last layer, sorted, over the largest (zeros drawn at 1e-4).*",
                "",
            ]
    if "demo" in results:
        lines += [
            "### The done criterion: the full demo with `sparsity.mode=prune sparsity.target_support=0.25`",
            "",
            "`configs/demo.yaml` (30 epochs, 150 steps), support logged every step (`train.log_every=1`); "
            "target 64 of 256 columns; last quarter = steps 113-150. `demo-paper` is the demo as shipped "
            "(the paper's penalty, lambda 1e-4); `demo-prune` adds `sparsity.mode=prune sparsity.target_support=0.25`.",
            "",
            *demo_table(results["demo"]),
            "",
        ]
    if "cifar" in results:
        lines += [
            "### CIFAR-10 at CPU scale",
            "",
            "`configs/reproduce/base.yaml` (real CIFAR-10, 5,000 training images, 5 epochs = 95 steps, head "
            "128 -> 512 -> 128: 512 columns, target 128), the k-NN of pretraining's end (5-NN and k=200 on "
            "the 5,000 training images against the 10,000 test images).",
            "",
            *demo_table(results["cifar"], CIFAR_CELLS),
            "",
        ]
    return "\n".join(lines)


def cmd_write(args) -> None:
    out = Path(args.out)
    results = load_results(out)
    if "optimizers" in results:
        write_figure(results["optimizers"], FIGURE)
    text = render(results)
    (out / "tables.md").write_text(text + "\n")
    if args.doc:
        doc = Path(args.doc)
        old = doc.read_text()
        if BEGIN not in old or END not in old:
            sys.exit(f"{doc} has no {BEGIN} ... {END} section to fill")
        head, rest = old.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
        print(f"wrote {doc}")
    else:
        print(text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "plan"):
        p = sub.add_parser(name)
        p.add_argument(
            "--parts",
            nargs="+",
            default=["invariance", "efflr", "optimizers", "demo"],
            choices=["invariance", "efflr", "optimizers", "demo", "cifar"],
        )
        p.add_argument(
            "--seeds",
            nargs="+",
            type=int,
            default=None,
            help="seeds of the training parts (default: 0 1; demo: 0 1 2; cifar: 0)",
        )
        p.add_argument("--out", default=str(DEFAULT_OUT))
        p.add_argument("--redo", action="store_true", help="measure invariance / efflr again")
    w = sub.add_parser("write")
    w.add_argument("--out", default=str(DEFAULT_OUT))
    w.add_argument("--doc", default=None, help="fill this markdown file's marked section")
    args = parser.parse_args(argv)
    if args.command == "write":
        cmd_write(args)
    else:
        args.dry = args.command == "plan"
        cmd_run(args)


if __name__ == "__main__":
    main()
