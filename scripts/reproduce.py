"""Test the papers' claims at CPU scale on real CIFAR-10 and write docs/reproduction.md (issue 8).

Every number comes from plain `sparsehead` commands (pretrain, evaluate, analyze), so any cell can
be re-run by hand. The grid is resumable: a finished step is skipped, a killed pretraining resumes
from its last checkpoint, so it can be run in pieces across sessions.

    python scripts/reproduce.py run                          # the whole grid, seeds 0 1 2
    python scripts/reproduce.py run --experiments table1     # one experiment
    python scripts/reproduce.py run --cells directclr --seeds 3   # one cell, another seed
    python scripts/reproduce.py plan                         # the commands, without running them
    python scripts/reproduce.py write                        # docs/reproduction.md from finished runs
    python scripts/reproduce.py write-long --base configs/reproduce/long.yaml --ledger docs/results/long.json
                                       # the longer experiment's table in docs/sparsehead.md and reproduction.md

--ledger FILE keeps the numbers of every finished run in one JSON file that is committed with the
docs: a run found there is not run again, so a grid can be continued in another session (or on
another machine) whose run folders are gone.

Experiments (claims of Song et al. 2023, Song et al. 2023 (summary), Jing et al. 2022):
  table1      SimCLR, BYOL, Barlow Twins, each without and with SparseHead (lambda 1e-4)
  lambda      SimCLR with lambda in 0, 1e-5, 1e-4, 1e-3, 1e-2: accuracy and support size
  heads       SimCLR with identity / linear / MLP heads: representation spectra (Fig. 1)
  projectors  no projector < linear projector < DirectCLR / fixed low-rank (Jing et al. 2022 Table 1/2)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "configs" / "reproduce" / "base.yaml"
RUNS = REPO / "runs" / "reproduce"
LEDGER: Path | None = None  # --ledger: the finished runs' numbers, kept beyond the run folders
DOC = REPO / "docs" / "reproduction.md"
FIGURES = REPO / "docs" / "figures" / "reproduction"
SEEDS = (0, 1, 2)
sys.path.insert(0, str(REPO / "src"))  # this checkout's sparsehead, for its method names and run folders
import torch  # noqa: E402

from sparsehead.core.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from sparsehead.methods import display_name  # noqa: E402
from sparsehead.runs.folder import RunDir  # noqa: E402
from sparsehead.sparsity import gini, top_share  # noqa: E402

# Cells: run-name stem -> overrides on top of configs/reproduce/base.yaml. Shared cells run once.
CELLS = {
    "simclr-mlp-lam0": ["method.name=simclr", "sparsity.lam=0"],
    "simclr-mlp-lam1e-05": ["method.name=simclr", "sparsity.lam=1e-5"],
    "simclr-mlp-lam0.0001": ["method.name=simclr", "sparsity.lam=1e-4"],
    "simclr-mlp-lam0.001": ["method.name=simclr", "sparsity.lam=1e-3"],
    "simclr-mlp-lam0.01": ["method.name=simclr", "sparsity.lam=1e-2"],
    "byol-mlp-lam0": ["method.name=byol", "sparsity.lam=0"],
    "byol-mlp-lam0.0001": ["method.name=byol", "sparsity.lam=1e-4"],
    "barlow_twins-mlp-lam0": ["method.name=barlow_twins", "sparsity.lam=0"],
    "barlow_twins-mlp-lam0.0001": ["method.name=barlow_twins", "sparsity.lam=1e-4"],
    "simclr-identity": ["method.name=simclr", "head.kind=identity", "sparsity.lam=0"],
    "simclr-linear": ["method.name=simclr", "head.kind=linear", "sparsity.lam=0"],
    "simclr-lowrank_diagonal": ["method.name=simclr", "head.kind=lowrank_diagonal", "sparsity.lam=0"],
    "directclr": ["method.name=directclr", "sparsity.lam=0"],
    # Issue 17: the paper's penalty plus sparsity.mode=prune to a quarter of the head's 512 columns
    # (docs/sparsehead.md); compare with simclr-mlp-lam0.0001, which differs only by the pruning.
    "simclr-mlp-prune0.25": [
        "method.name=simclr",
        "sparsity.lam=1e-4",
        "sparsity.mode=prune",
        "sparsity.target_support=0.25",
    ],
}
EXPERIMENTS = {
    "table1": [
        "simclr-mlp-lam0",
        "simclr-mlp-lam0.0001",
        "byol-mlp-lam0",
        "byol-mlp-lam0.0001",
        "barlow_twins-mlp-lam0",
        "barlow_twins-mlp-lam0.0001",
    ],
    "lambda": [
        "simclr-mlp-lam0",
        "simclr-mlp-lam1e-05",
        "simclr-mlp-lam0.0001",
        "simclr-mlp-lam0.001",
        "simclr-mlp-lam0.01",
    ],
    "heads": ["simclr-identity", "simclr-linear", "simclr-mlp-lam0"],
    "projectors": ["simclr-identity", "simclr-linear", "directclr", "simclr-lowrank_diagonal"],
    # Issue 17's longer experiment (configs/reproduce/long.yaml): no SparseHead, the paper's penalty, prune
    "long": ["simclr-mlp-lam0", "simclr-mlp-lam0.0001", "simclr-mlp-prune0.25"],
}
# Song et al. 2023 Table 1, CIFAR-10, ResNet-18: (linear top-1, 5-NN top-1) in percent.
PAPER_TABLE1 = {
    ("simclr", False): (91.80, 88.42),
    ("simclr", True): (92.75, 90.32),
    ("byol", False): (91.73, 89.26),
    ("byol", True): (92.45, 90.05),
    ("barlow_twins", False): (90.88, 88.78),
    ("barlow_twins", True): (91.28, 89.87),
}


def sparsehead_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sparsehead", *args]


def sparsehead_env() -> dict:
    """This checkout's package first on the path, so a run never picks up another install."""
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def steps(cell: str, seed: int) -> list[tuple[str, list[str], Path]]:
    """(name, command, file that exists once the step is done) for one run, in order."""
    run = RUNS / f"{cell}-s{seed}"
    analyze = [("analyze", sparsehead_cmd("analyze", str(run)), run / "analysis" / "analysis.json")]
    return [
        (
            "pretrain",
            sparsehead_cmd(
                "pretrain", "--config", str(BASE), *CELLS[cell], f"train.seed={seed}", "--run-dir", str(run)
            ),
            run / "results.json",
        ),
        ("linear", sparsehead_cmd("evaluate", str(run), "--protocol", "linear"), run / "eval" / "linear.json"),
        ("knn", sparsehead_cmd("evaluate", str(run), "--protocol", "knn"), run / "eval" / "knn.json"),
    ] + (analyze if cell in SPECTRAL_CELLS else [])


def cells_of(experiments: list[str]) -> list[str]:
    return list(dict.fromkeys(c for e in experiments for c in EXPERIMENTS[e]))


# The cells whose spectra and head support the document reports; the others skip `analyze` (50 s a run).
SPECTRAL_CELLS = cells_of(["lambda", "heads", "projectors"]) + ["simclr-mlp-prune0.25"]  # + its head support


def run_grid(cells: list[str], seeds: list[int], dry: bool) -> None:
    for seed in seeds:  # seed-major: a partial grid already has one seed of every cell
        for cell in cells:
            run = RUNS / f"{cell}-s{seed}"
            if run.name in ledger():
                continue
            for name, cmd, done in steps(cell, seed):
                if done.is_file():
                    continue
                print(
                    "sparsehead " + " ".join(cmd[3:]) if dry else f"[{time.strftime('%H:%M:%S')}] {run.name}: {name}",
                    flush=True,
                )
                if dry:
                    continue
                start = time.perf_counter()
                proc = subprocess.run(cmd, cwd=REPO, env=sparsehead_env(), capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{run.name}: {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
                record_time(run, name, time.perf_counter() - start)
            if LEDGER is not None and not dry:
                record_in_ledger(run.name, run_numbers(cell, seed))


def record_time(run: Path, step: str, seconds: float) -> None:
    path = run / "wall_seconds.json"
    times = json.loads(path.read_text()) if path.is_file() else {}
    times[step] = times.get(step, 0.0) + seconds  # a resumed pretraining adds its pieces
    path.write_text(json.dumps(times, indent=2) + "\n")


def ledger() -> dict:
    return (read_json(LEDGER) or {}) if LEDGER is not None else {}


def machine() -> str:
    """The CPU's model name, core count and GPU, as a table's footnote names the machine."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.machine(),
    )
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{model}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def record_in_ledger(name: str, numbers: dict) -> None:
    """Add one finished run's numbers, with the machine and date they came from."""
    entries = ledger()
    entries[name] = {**numbers, "machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M")}
    LEDGER.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(LEDGER, dict(sorted(entries.items())))


# --- reading the results ---------------------------------------------------------------------------


def read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def run_numbers(cell: str, seed: int) -> dict | None:
    """Percentages and spectral numbers of one finished run (None while it is not finished): from
    its run folder, or from the ledger once the folder is gone."""
    if not (RUNS / f"{cell}-s{seed}").is_dir() and f"{cell}-s{seed}" in ledger():
        return ledger()[f"{cell}-s{seed}"]
    run = RunDir(RUNS / f"{cell}-s{seed}")  # a missing field is an error naming the file, not a blank cell
    linear, knn, analysis = run.read_eval("linear"), run.read_eval("knn"), run.read_analysis()
    if linear is None or knn is None or (analysis is None and cell in SPECTRAL_CELLS):
        return None
    spectral = {}
    if analysis is not None:
        head = analysis.field("head")
        spectral = {
            "dim_r": analysis.field("r", "dim"),
            "dim_z": analysis.field("z", "dim"),
            "erank_r": analysis.number("r", "effective_rank"),
            "erank_z": analysis.number("z", "effective_rank"),
            "collapsed_r": analysis.field("r", "collapsed_dims"),
            "collapsed_z": analysis.field("z", "collapsed_dims"),
            "support": head[0]["support"] if head else None,
            "top10_share": top_share(torch.tensor(head[0]["column_norms"])) if head else None,
            "gini": gini(torch.tensor(head[0]["column_norms"])) if head else None,
            "large_columns": large_columns(head[0]["column_norms"]) if head else None,
            "l21": head[0]["l21"] if head else None,
            "columns": head[0]["shape"][1] if head else None,
        }
    return {
        **spectral,
        "linear": 100 * linear.number("r", "top1"),
        "linear5": 100 * linear.number("r", "top5"),
        "knn": 100 * knn.number("r", "top1"),
        "knn_weighted": 100 * knn.number("r", "weighted_top1"),
        "minutes": sum((read_json(run.path / "wall_seconds.json") or {}).values()) / 60,
    }


def large_columns(norms: list[float], share: float = 0.1) -> int:
    """Columns whose norm is at least `share` x the largest: a coarser support than the analysis's
    1e-3 threshold, which a penalised (not proximal) head under Adam rarely crosses."""
    return sum(n >= share * max(norms) for n in norms)


def collect(cell: str, seeds: list[int]) -> dict[str, list[float]]:
    """Every number of a cell as a list over its finished seeds."""
    runs = [n for n in (run_numbers(cell, s) for s in seeds) if n is not None]
    keys = dict.fromkeys(key for r in runs for key in r)
    return {key: [r[key] for r in runs if r.get(key) is not None] for key in keys}


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.2f}{sd}"


def verdict(without: list[float], with_: list[float]) -> str:
    """'held' when the mean gain exceeds twice its standard error, 'reversed' when the loss does,
    else 'inside the noise' (Welch standard error of the difference of means). The two-sided Welch
    t-test p-value is given beside it: with 3 seeds a side, 2 SE is a lenient bar (p about 0.1)."""
    from scipy import stats

    if len(without) < 2 or len(with_) < 2:
        return "too few seeds"
    diff = statistics.fmean(with_) - statistics.fmean(without)
    se = math.sqrt(statistics.variance(without) / len(without) + statistics.variance(with_) / len(with_))
    p = stats.ttest_ind(with_, without, equal_var=False).pvalue if se > 0 else float(diff == 0)
    numbers = f"{diff:+.2f}, 2 SE = {2 * se:.2f}, p = {p:.2g}"
    if diff > 2 * se:
        return f"held ({numbers})"
    if diff < -2 * se:
        return f"reversed ({numbers})"
    return f"inside the noise ({numbers})"


# --- the document ----------------------------------------------------------------------------------


def compare_figure(cells: list[str], name: str) -> str | None:
    """Seed-0 spectra of `cells` overlaid by `sparsehead analyze --compare`, copied into docs/figures."""
    runs = [RUNS / f"{c}-s0" for c in cells]
    if not all((r / "results.json").is_file() for r in runs):
        return None
    out = RUNS / f"compare-{name}"
    subprocess.run(
        sparsehead_cmd("analyze", "--compare", *map(str, runs), "--out", str(out)),
        cwd=REPO,
        env=sparsehead_env(),
        check=True,
        capture_output=True,
    )
    FIGURES.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "spectra_compare.png", FIGURES / f"{name}.png")
    return f"figures/reproduction/{name}.png"


def lambda_figure(data: dict) -> str | None:
    """Accuracy and head support against lambda, every seed as a dot and the mean as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in EXPERIMENTS["lambda"] if data[c].get("linear")]
    if len(cells) < 2:
        return None
    # lambda = 0 cannot sit on a log axis: draw it one decade left of the smallest positive lambda
    lams = [float(c.split("lam")[-1]) for c in cells]
    zero_at = min(lam for lam in lams if lam > 0) / 10
    xs = [lam if lam > 0 else zero_at for lam in lams]
    fig, (acc_ax, sup_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, label in (("linear", "linear probe"), ("knn", "5-NN")):
        means = [statistics.fmean(data[c][key]) for c in cells]
        acc_ax.plot(xs, means, marker="o", label=label)
        for x, c in zip(xs, cells):
            acc_ax.scatter([x] * len(data[c][key]), data[c][key], s=8, color="grey")
    for key, label in (("support", "norm >= 1e-3 x largest"), ("large_columns", "norm >= 0.1 x largest")):
        sup_ax.plot(xs, [statistics.fmean(data[c][key]) for c in cells], marker="o", label=label)
    sup_ax.legend()
    for ax in (acc_ax, sup_ax):
        ax.set_xscale("log")
        ax.set_xticks(xs, ["0" if lam == 0 else f"{lam:g}" for lam in lams])
        ax.set_xlabel("lambda")
    acc_ax.set_ylabel("top-1 on the test set (%)")
    acc_ax.legend()
    sup_ax.set_ylabel(f"head columns kept (of {data[cells[0]]['columns'][0]})")
    fig.suptitle("SimCLR + SparseHead: the lambda sweep")
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "lambda_sweep.png", dpi=90)
    plt.close(fig)
    return "figures/reproduction/lambda_sweep.png"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def higher(data: dict, high: str, low: str, key: str) -> str:
    """Verdict on the claim that cell `high` scores above cell `low` on `key`."""
    return verdict(data[low].get(key, []), data[high].get(key, []))


def claims(data: dict) -> list[list[str]]:
    """(claim, what was compared, verdict) rows for the summary at the top of the document."""
    rows = []
    for m in ("simclr", "byol", "barlow_twins"):
        for key, name in (("linear", "linear top-1"), ("knn", "5-NN top-1")):
            rows.append(
                [
                    f"1. SparseHead improves {display_name(m)}",
                    name,
                    higher(data, f"{m}-mlp-lam0.0001", f"{m}-mlp-lam0", key),
                ]
            )
    for cell in EXPERIMENTS["lambda"][1:]:  # each lambda against 0: picking the best would tune on the test set
        rows.append(
            [
                f"2. lambda = {cell.split('lam')[-1]} beats lambda = 0",
                "linear top-1",
                higher(data, cell, "simclr-mlp-lam0", "linear"),
            ]
        )
    rows.append(
        [
            "2. Larger lambda, smaller head support",
            "support, lambda 1e-2 against 0",
            higher(data, "simclr-mlp-lam0", "simclr-mlp-lam0.01", "support"),
        ]
    )
    rows.append(
        [
            "2. Larger lambda, fewer large head columns",
            "columns >= 0.1 x largest, lambda 1e-2 against 0",
            higher(data, "simclr-mlp-lam0", "simclr-mlp-lam0.01", "large_columns"),
        ]
    )
    for lam in ("0.0001", "0.01"):
        rows.append(
            [
                "3. SparseHead lowers the embedding's effective rank (Fig. 3)",
                f"erank z, lambda {lam} against 0",
                higher(data, "simclr-mlp-lam0", f"simclr-mlp-lam{lam}", "erank_z"),
            ]
        )
        rows.append(
            [
                "3. SparseHead raises the representation's effective rank (Fig. 3)",
                f"erank r, lambda {lam} against 0",
                higher(data, f"simclr-mlp-lam{lam}", "simclr-mlp-lam0", "erank_r"),
            ]
        )
    rows.append(
        [
            "3. No head collapses r more than a linear head (Fig. 1)",
            "erank r, linear against identity",
            higher(data, "simclr-linear", "simclr-identity", "erank_r"),
        ]
    )
    rows.append(
        [
            "3. No head collapses r more than an MLP head (Fig. 1)",
            "erank r, MLP against identity",
            higher(data, "simclr-mlp-lam0", "simclr-identity", "erank_r"),
        ]
    )
    for head in ("linear", "mlp-lam0"):
        rows.append(
            [
                f"3. z has a lower effective rank than r ({head.split('-')[0]} head, Fig. 1)",
                "erank r against erank z of the same runs",
                verdict(data[f"simclr-{head}"].get("erank_z", []), data[f"simclr-{head}"].get("erank_r", [])),
            ]
        )
    rows.append(
        [
            "4. A linear projector beats no projector (Jing et al. 2022)",
            "linear top-1",
            higher(data, "simclr-linear", "simclr-identity", "linear"),
        ]
    )
    rows.append(
        [
            "4. DirectCLR beats a linear projector (Jing et al. 2022)",
            "linear top-1",
            higher(data, "directclr", "simclr-linear", "linear"),
        ]
    )
    rows.append(
        [
            "4. A fixed low-rank diagonal projector beats a linear one (Jing et al. 2022)",
            "linear top-1",
            higher(data, "simclr-lowrank_diagonal", "simclr-linear", "linear"),
        ]
    )
    return rows


def write_doc(seeds: list[int]) -> None:
    base = BASE.read_text().strip()
    data = {c: collect(c, seeds) for c in CELLS}
    minutes = [m for d in data.values() for m in d.get("minutes", [])]
    base_name = BASE.relative_to(REPO) if BASE.is_relative_to(REPO) else BASE
    lines = [
        "# Reproducing the papers' claims at CPU scale",
        "",
        "Generated by `python scripts/reproduce.py write` from the runs of "
        "`python scripts/reproduce.py run` (every run is `sparsehead pretrain` + `evaluate --protocol "
        "linear` + `evaluate --protocol knn`, + `analyze` where spectra are reported; "
        "`python scripts/reproduce.py plan` prints them).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, no GPU; {len(minutes)} runs, "
        f"{sum(minutes):.0f} min of wall time in all ({statistics.fmean(minutes) if minutes else 0:.1f} "
        "min per run, pretraining + evaluation + analysis).",
        "",
        f"Scale: every run uses `{base_name}` plus its cell's overrides (far smaller than "
        "the papers' 1000-epoch ResNet-18 runs, so absolute accuracies are much lower):",
        "",
        "```yaml",
        base,
        "```",
        "",
        "Numbers are mean ± sample standard deviation over seeds "
        f"{', '.join(map(str, seeds))} (percent). Verdict rule: a claim held when the mean difference "
        "exceeds twice its standard error (Welch), reversed when it falls below minus twice that, "
        "otherwise it is inside the noise at this scale. p is the two-sided Welch t-test p-value: with "
        "3 seeds a side the 2 SE bar corresponds to p of about 0.1, and the document makes about 20 "
        "comparisons, so a single 'held' near that bar is weak evidence. Nothing was tuned on the test set: the linear "
        "probe chooses its weight decay on a validation split of the training set.",
        "",
    ]

    lines += ["## The claims at a glance", ""]
    lines += table(["claim", "compared", "verdict at this scale"], claims(data)) + [""]

    lines += ["## 1. SparseHead against the same method without it (Song et al. 2023 Table 1)", ""]
    rows = []
    for m in ("simclr", "byol", "barlow_twins"):
        off, on = data[f"{m}-mlp-lam0"], data[f"{m}-mlp-lam0.0001"]
        for sparse, d in ((False, off), (True, on)):
            paper = PAPER_TABLE1[(m, sparse)]
            rows.append(
                [
                    display_name(m) + (" + SparseHead" if sparse else ""),
                    str(len(d.get("linear", []))),
                    mean_sd(d.get("linear", [])),
                    mean_sd(d.get("knn", [])),
                    f"{paper[0]:.2f} / {paper[1]:.2f}",
                ]
            )
        rows.append(
            [
                f"{display_name(m)}: SparseHead effect",
                "",
                verdict(off.get("linear", []), on.get("linear", [])),
                verdict(off.get("knn", []), on.get("knn", [])),
                f"{PAPER_TABLE1[(m, True)][0] - PAPER_TABLE1[(m, False)][0]:+.2f} / "
                f"{PAPER_TABLE1[(m, True)][1] - PAPER_TABLE1[(m, False)][1]:+.2f}",
            ]
        )
    lines += table(["method", "seeds", "linear top-1", "5-NN top-1", "paper linear / 5-NN"], rows) + [""]

    lines += ["## 2. The effect of lambda (SimCLR)", ""]
    rows = []
    for cell in EXPERIMENTS["lambda"]:
        d = data[cell]
        support = f"{mean_sd(d.get('support', []))} of {d['columns'][0]}" if d.get("columns") else "-"
        rows.append(
            [
                cell.split("lam")[-1],
                mean_sd(d.get("linear", [])),
                mean_sd(d.get("knn", [])),
                support,
                mean_sd(d.get("large_columns", [])),
                mean_sd(d.get("l21", [])),
                mean_sd(d.get("erank_z", [])),
            ]
        )
    lines += table(
        [
            "lambda",
            "linear top-1",
            "5-NN top-1",
            "head support (norm >= 1e-3 x largest)",
            "columns >= 0.1 x largest",
            "L2,1 norm of the last layer",
            "effective rank of z",
        ],
        rows,
    ) + [""]
    figure = lambda_figure(data)
    if figure:
        lines += [
            f"![lambda sweep]({figure})",
            "",
            "*Test accuracy (grey dots: seeds) and the columns of "
            "the head's last layer kept at two thresholds, against lambda.*",
            "",
        ]

    lines += [
        "## 3. Spectra (Song et al. 2023 Fig. 1 and Fig. 3)",
        "",
        "Effective rank (Roy & Vetterli) of the test-set covariance of r and z, and the number of "
        "collapsed dimensions (eigenvalues below 1e-5 x the largest). The identity head's z is r itself. "
        "(The papers' full-width ResNet-18 has a 512-d r; this one's width is 8 x model.width.)",
        "",
    ]
    rows = []
    for cell in ["simclr-identity", "simclr-linear", "simclr-mlp-lam0", "simclr-mlp-lam0.0001", "simclr-mlp-lam0.01"]:
        d = data[cell]
        rows.append(
            [
                cell,
                " / ".join(str(d[k][0]) if d.get(k) else "-" for k in ("dim_r", "dim_z")),
                mean_sd(d.get("erank_r", [])),
                mean_sd(d.get("erank_z", [])),
                mean_sd(d.get("collapsed_r", [])),
                mean_sd(d.get("collapsed_z", [])),
            ]
        )
    lines += table(["run", "dim r / z", "erank r", "erank z", "collapsed r", "collapsed z"], rows) + [""]
    for cells, name, caption in (
        (
            ["simclr-mlp-lam0", "simclr-mlp-lam0.0001", "simclr-mlp-lam0.01"],
            "sparsehead_spectra",
            "SimCLR without SparseHead and with lambda 1e-4 and 1e-2",
        ),
        (["simclr-identity", "simclr-linear", "simclr-mlp-lam0"], "head_spectra", "identity / linear / MLP heads"),
    ):
        figure = compare_figure(cells, name)
        if figure:
            lines += [
                f"![{caption}]({figure})",
                "",
                f"*{caption}, seed 0: eigenvalue spectra of r (left) and z "
                f"(right), made by `sparsehead analyze --compare`.*",
                "",
            ]

    lines += ["## 4. Projectors (Jing et al. 2022 Table 1/2: no projector < linear < DirectCLR / fixed low-rank)", ""]
    paper = {"simclr-identity": "51.5", "simclr-linear": "61.1", "directclr": "62.7", "simclr-mlp-lam0": "66.5"}
    rows = [
        [
            cell,
            mean_sd(data[cell].get("linear", [])),
            mean_sd(data[cell].get("knn", [])),
            mean_sd(data[cell].get("erank_r", [])),
            paper.get(cell, "-"),
        ]
        for cell in EXPERIMENTS["projectors"] + ["simclr-mlp-lam0"]
    ]
    lines += table(["run", "linear top-1", "5-NN top-1", "erank r", "paper (ImageNet, 100 epochs, linear)"], rows) + [
        ""
    ]

    lines += [
        "## Commands and wall time per cell",
        "",
        f"Run RUN = `runs/reproduce/CELL-sSEED` is `sparsehead pretrain --config {base_name} OVERRIDES "
        "train.seed=SEED --run-dir RUN`, then `sparsehead evaluate RUN --protocol linear`, `sparsehead "
        "evaluate RUN --protocol knn` and, for the cells whose spectra are reported (not the BYOL and "
        "Barlow Twins ones), `sparsehead analyze RUN`. Minutes are the mean over seeds of all of them "
        "on this machine:",
        "",
    ]
    lines += table(
        ["cell", "overrides", "runs", "minutes"],
        [
            [c, " ".join(f"`{o}`" for o in CELLS[c]), str(len(d.get("minutes", []))), mean_sd(d.get("minutes", []))]
            for c, d in data.items()
        ],
    ) + [""]
    DOC.write_text("\n".join(lines) + "\n" + kept_discussion())
    print(f"written: {DOC}")


LONG_ROWS = {
    "simclr-mlp-lam0": ("none", "0"),
    "simclr-mlp-lam0.0001": ("penalty (the paper)", "1e-4"),
    "simclr-mlp-prune0.25": ("prune, target 0.25", "1e-4"),
}


def long_section(seeds: list[int]) -> str:
    """The longer experiment's table: per mode, the head's support and concentration, accuracy and
    effective ranks, then the verdicts of each mode against no SparseHead."""
    data = {c: collect(c, seeds) for c in EXPERIMENTS["long"]}
    minutes = [m for d in data.values() for m in d.get("minutes", [])]
    columns = next((d["columns"][0] for d in data.values() if d.get("columns")), "?")
    lines = [
        f"Generated by `python scripts/reproduce.py write-long` from `{BASE.name}` runs ({len(minutes)} of "
        f"{len(seeds) * len(data)} finished; {statistics.fmean(minutes) if minutes else 0:.0f} min per run: "
        "pretraining + linear probe + k-NN + analysis). Machines: "
        + "; ".join(sorted({e["machine"] for e in ledger().values() if "machine" in e}) or ["-"])
        + ".",
        "",
    ]
    rows = []
    for cell, d in data.items():
        mode, lam = LONG_ROWS[cell]
        rows.append(
            [
                mode,
                lam,
                str(len(d.get("linear", []))),
                mean_sd(d.get("linear", [])),
                mean_sd(d.get("knn", [])),
                f"{mean_sd(d.get('support', []))} of {columns}",
                mean_sd(d.get("large_columns", [])),
                mean_sd([100 * v for v in d.get("top10_share", [])]),
                mean_sd(d.get("gini", [])),
                mean_sd(d.get("erank_r", [])),
                mean_sd(d.get("erank_z", [])),
            ]
        )
    lines += table(
        [
            "sparsity.mode",
            "lambda",
            "seeds",
            "linear top-1",
            "5-NN top-1",
            "support (>= 1e-3 x largest)",
            "columns >= 0.1 x largest",
            "top-10% share of the L2,1 norm (%)",
            "Gini of the column norms",
            "erank r",
            "erank z",
        ],
        rows,
    ) + [""]
    off = data["simclr-mlp-lam0"]
    rows = [
        [
            f"{LONG_ROWS[cell][0]} against none",
            verdict(off.get("linear", []), data[cell].get("linear", [])),
            verdict(off.get("knn", []), data[cell].get("knn", [])),
        ]
        for cell in EXPERIMENTS["long"][1:]
    ]
    lines += table(["comparison", "linear top-1", "5-NN top-1"], rows)
    return "\n".join(lines) + "\n"


def replace_marked(path: Path, name: str, text: str) -> None:
    """Put `text` between the markers `<!-- begin NAME -->` / `<!-- end NAME -->` of a hand-written
    document, which must have them (so nothing is written where a reader does not expect it)."""
    begin, end = f"<!-- begin {name} (generated) -->", f"<!-- end {name} -->"
    doc = path.read_text()
    if begin not in doc or end not in doc:
        sys.exit(f"{path}: no '{begin}' ... '{end}' markers to write the {name} table between; add them")
    head, rest = doc.split(begin, 1)
    atomic_write_text(path, head + begin + "\n" + text + end + rest.split(end, 1)[1])


def write_long(seeds: list[int]) -> None:
    text = long_section(seeds)
    for path in (DOC, DOC.parent / "sparsehead.md"):
        replace_marked(path, "long", text)
        print(f"written: {path}")


def kept_discussion() -> str:
    """The hand-written '## Discussion' section of an earlier document: `write` regenerates the
    numbers and keeps the reading of them."""
    old = DOC.read_text() if DOC.is_file() else ""
    start = old.find("\n## Discussion")
    return "" if start < 0 else old[start:]


def main() -> None:
    global BASE, RUNS, DOC, FIGURES, LEDGER
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "plan", "write", "write-long"])
    parser.add_argument("--experiments", nargs="+", choices=sorted(EXPERIMENTS), default=sorted(EXPERIMENTS))
    parser.add_argument("--cells", nargs="+", choices=list(CELLS), help="only these cells (instead of --experiments)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--base", type=Path, default=BASE, help="shared config (a smoke test: a tiny one)")
    parser.add_argument("--runs", type=Path, default=RUNS, help="parent folder of the grid's run folders")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document `write` produces")
    parser.add_argument("--ledger", type=Path, help="JSON file of finished runs' numbers (kept with the docs)")
    args = parser.parse_args()
    BASE, RUNS, DOC = args.base.resolve(), args.runs.resolve(), args.doc.resolve()
    LEDGER = args.ledger.resolve() if args.ledger else None
    FIGURES = DOC.parent / "figures" / "reproduction"
    if args.action == "write":
        write_doc(args.seeds)
    elif args.action == "write-long":
        write_long(args.seeds)
    else:
        run_grid(args.cells or cells_of(args.experiments), args.seeds, dry=args.action == "plan")


if __name__ == "__main__":
    main()
