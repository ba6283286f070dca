"""`sparsehead report`: one results table across runs, laid out like Song et al. 2023 Table 1.

Runs whose configs differ only in the seed (or in keys that do not change results: run name,
output folder, logging, progress bar, threads, cache, online monitors) are one row: mean ±
sample standard deviation across them. Accuracies are shown in percent.
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Optional

from sparsehead import config
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.methods import METHODS, display_name
from sparsehead.runs.folder import RunDir

# Keys that identify a run or only watch it, not a configuration: they never change the numbers.
IGNORED_KEYS = {
    "train.seed",
    "train.run_name",
    "train.out_dir",
    "train.progress",
    "train.log_every",
    "train.checkpoint_every",
    "train.threads",
    "train.device",
    "data.cache_dir",
    "eval.knn_batch_size",
    "eval.knn_every",
    "eval.online_linear",
    "eval.online_linear_lr",
}
# (column, file in run_dir/eval, path into its "r" entry)
METRICS = [
    ("linear top-1", "linear", ("top1",)),
    ("linear top-5", "linear", ("top5",)),
    ("k-NN top-1", "knn", ("top1",)),
    ("k-NN weighted top-1", "knn", ("weighted_top1",)),
    ("NCC top-1", "ncc", ("top1",)),
    ("1% labels top-1", "semisup", ("1pct", "top1")),
    ("10% labels top-1", "semisup", ("10pct", "top1")),
]


def flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_metrics(run: RunDir, cfg: config.Config) -> dict[str, float]:
    """The run's accuracies (fractions) from its eval records; k-NN falls back to results.json.
    A protocol not evaluated leaves its column empty; a record without the field is an error."""
    found = {}
    for column, protocol, keys in METRICS:
        record = run.read_eval(protocol)
        if record is None:
            continue
        if protocol == "semisup" and keys[0] not in {f"{f * 100:g}pct" for f in record.field("options", "fractions")}:
            continue  # evaluated with other label fractions
        found[column] = record.number("r", *keys)
    results = run.read_results()
    if "k-NN top-1" not in found and results is not None:
        found["k-NN top-1"] = results.number(f"knn{cfg.eval.knn_k}_top1")
    return found


def load_run(run_dir: str | Path) -> tuple[config.Config, dict[str, float]]:
    run = RunDir(run_dir)
    if not run.is_run():
        raise EvaluationError(
            f"{run_dir} is not a run folder (no config.yaml); give folders made by `sparsehead pretrain`"
        )
    cfg = run.read_config()
    return cfg, run_metrics(run, cfg)


def mean_std(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    pct = [100 * v for v in values]
    return statistics.fmean(pct), (statistics.stdev(pct) if len(pct) > 1 else None)


def build_table(run_dirs: list[str | Path]) -> tuple[list[str], list[dict]]:
    """Column names and one row per configuration (runs grouped across seeds)."""
    if not run_dirs:
        raise EvaluationError("give at least one run folder")
    groups: dict[tuple, dict] = {}
    for run_dir in run_dirs:
        cfg, metrics = load_run(run_dir)
        settings = {k: v for k, v in flatten(config.to_dict(cfg)).items() if k not in IGNORED_KEYS}
        key = tuple(sorted((k, repr(v)) for k, v in settings.items()))
        group = groups.setdefault(key, {"cfg": cfg, "settings": settings, "runs": []})
        group["runs"].append(metrics)
    # Keys that vary between rows beyond method, head and lambda: shown so rows stay distinguishable.
    shown = {"method.name", "head.kind", "sparsity.lam"}
    varying = sorted(
        k
        for k in set().union(*(g["settings"] for g in groups.values()))
        if k not in shown and len({repr(g["settings"].get(k)) for g in groups.values()}) > 1
    )
    metrics = [m for m, _, _ in METRICS if any(m in r for g in groups.values() for r in g["runs"])]
    columns = ["method", "head", "lambda"] + (["setting"] if varying else []) + ["runs"] + metrics
    order = list(METHODS)  # registration order
    rows = []
    for group in sorted(
        groups.values(),
        key=lambda g: (
            order.index(g["cfg"].method.name) if g["cfg"].method.name in order else len(order),
            g["cfg"].method.name,
            g["cfg"].sparsity.lam,
            g["cfg"].head.kind,
            [repr(g["settings"].get(k)) for k in varying],
        ),
    ):
        cfg = group["cfg"]
        row = {
            "method": display_name(cfg.method.name),
            "head": cfg.head.kind,
            "lambda": f"{cfg.sparsity.lam:g}",
            "runs": len(group["runs"]),
        }
        if varying:
            row["setting"] = " ".join(f"{k}={group['settings'].get(k)}" for k in varying)
        for m in metrics:
            values = [r[m] for r in group["runs"] if m in r]
            row[m] = (*mean_std(values), len(values))
        rows.append(row)
    return columns, rows


def _cell(value, runs: int) -> str:
    if not isinstance(value, tuple):
        return str(value)
    mean, std, n = value
    if mean is None:
        return "-"
    text = f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")
    return text + (f" ({n}/{runs} runs)" if n != runs else "")


def to_markdown(columns: list[str], rows: list[dict]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c], row["runs"]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(columns: list[str], rows: list[dict]) -> str:
    """One column per plain field, and <metric> mean / std / n columns per accuracy (percent)."""
    header, body = [], []
    for c in columns:
        header += [f"{c} mean", f"{c} std", f"{c} n"] if isinstance(rows[0][c], tuple) else [c]
    for row in rows:
        line = []
        for c in columns:
            if isinstance(row[c], tuple):
                mean, std, n = row[c]
                line += ["" if mean is None else f"{mean:.4f}", "" if std is None else f"{std:.4f}", n]
            else:
                line.append(row[c])
        body.append(line)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    return out.getvalue()
