"""`sparsehead analyze`: diagnostics of a trained run (or of any embeddings) -> JSON, PNG figures and
one self-contained HTML report (images inlined as base64: it opens offline, with no external URL)."""

from __future__ import annotations

import base64
import html
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from sparsehead import config
from sparsehead.analysis import plots
from sparsehead.analysis.metrics import diagnostics, spectral_summary
from sparsehead.core.atomic import atomic_write_json, atomic_write_text
from sparsehead.core.errors import SparseheadError
from sparsehead.core.options import opt
from sparsehead.runs.folder import RunDir
from sparsehead.sparsity import head_sparsity


@dataclass
class AnalyzeOptions:
    """The flags of `sparsehead analyze` (besides the targets and --data)."""

    compare: bool = opt(False, "overlay the spectra of several runs (needs --out)")
    features: Optional[str] = opt(None, "analyse an (N, d) .npy array of embeddings from any model")
    labels: Optional[str] = opt(None, "(N,) integer labels .npy for --features (class-centre metrics)")
    out: Optional[str] = opt(None, "output folder (default: RUN/analysis, or FILE-analysis)")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N")
    seed: int = opt(0, "seed of the augmented views and of subsampling")


class AnalysisError(SparseheadError, ValueError):
    """Input the analysis cannot use (a features file of the wrong shape, missing options), and the fix."""


# What each scalar means, for the report's table (the keys of metrics.diagnostics).
METRIC_HELP = {
    "samples": "feature vectors analysed (test split)",
    "dim": "feature dimension",
    "collapsed_dims": "covariance eigenvalues below 1e-5 x the largest (collapsed dimensions)",
    "collapsed_dims_normalized": "the same on L2-normalised features",
    "effective_rank": "Roy & Vetterli effective rank of the centred features (1..dim; higher = more dimensions used)",
    "rankme": "RankMe (Garrido et al. 2023): smooth rank of the uncentred feature matrix",
    "alpha_req": "alpha-ReQ: power-law decay exponent of the eigenspectrum (fitted on log-log)",
    "alpha_req_fit_ranks": "eigenvalue ranks the alpha-ReQ fit used",
    "pairwise_samples": "rows used for the min-max ratio and uniformity",
    "min_max_ratio": "Song et al. 2023 Eq. 9, (max - min) / min distance to the other samples, mean over queries",
    "min_max_ratio_normalized": "the same on L2-normalised features",
    "uniformity": "Wang & Isola uniformity, log mean exp(-2 ||x_i - x_j||^2) (lower = more uniform)",
    "alignment": "Wang & Isola alignment, mean ||f(view1) - f(view2)||^2 on normalised features (lower = better)",
    "centre_divergence": "Huang et al. 2023 divergence: max over class pairs of mu_k . mu_l "
    "(lower = centres further apart)",
    "delta_mu": "Huang et al. 2023 Delta_mu = 1 - min_k ||mu_k||^2 (0 = every class on one point)",
    "nearest_centre_accuracy": "nearest class-centre classifier accuracy (centres from these same features)",
    "collapse_threshold": "relative eigenvalue threshold for a collapsed dimension",
}


# --- features of a trained run ------------------------------------------------------------------------


@dataclass
class RunFeatures:
    name: str
    description: str
    cfg: config.Config
    run_dir: Path
    checkpoint: Path
    step: int
    labels: torch.Tensor
    r: torch.Tensor
    z: torch.Tensor
    views: dict = field(default_factory=dict)  # {"r": (r1, r2), "z": (z1, z2)} of two augmented views
    head: list = field(default_factory=list)


@torch.no_grad()
def view_features(method, data, views, device, seed: int = 0, batch_size: int = 512):
    """(r1, r2), (z1, z2): features of two augmented views of every image (network in eval mode)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    out = {"r": ([], []), "z": ([], [])}
    method.eval()
    for start in range(0, len(data), batch_size):
        pair = views(data.images[start : start + batch_size].to(device), gen, local=False)
        for i, x in enumerate(pair):
            r, z = method.embed(x)
            out["r"][i].append(r.float().cpu())
            out["z"][i].append(z.float().cpu())
    return {k: (torch.cat(a), torch.cat(b)) for k, (a, b) in out.items()}


def run_features(
    path: str | Path, data_overrides: Sequence[str] = (), device: str = "auto", with_views: bool = True, seed: int = 0
) -> RunFeatures:
    """Load a run (folder or checkpoint), extract r and z of its test split (and of two views)."""
    from sparsehead.data import datasets
    from sparsehead.evaluate.features import extract
    from sparsehead.runs.model import load_trained, resolve_device

    dev = resolve_device(device)
    trained = load_trained(path, dev)
    cfg = config.with_data_overrides(trained.cfg, data_overrides)
    test = datasets.load(cfg.data, "test")
    r, z = extract(trained.method, test, trained.views, dev)
    pairs = view_features(trained.method, test, trained.views, dev, seed) if with_views else {}
    c = trained.cfg
    return RunFeatures(
        name=trained.run_dir.name,
        description=f"{c.method.name}, head={c.head.kind}, lambda={c.sparsity.lam:g}",
        cfg=c,
        run_dir=trained.run_dir,
        checkpoint=trained.checkpoint_path,
        step=int(trained.state.get("step", 0)),
        labels=test.labels,
        r=r,
        z=z,
        views=pairs,
        head=head_sparsity(trained.method.sparse_head(), c.sparsity.layers, c.sparsity.support_threshold),
    )


# --- one run -------------------------------------------------------------------------------------------


def analyze_run(
    path: str | Path,
    out_dir: Optional[str | Path] = None,
    data_overrides: Sequence[str] = (),
    device: str = "auto",
    seed: int = 0,
) -> Path:
    """Diagnostics of r and z on the run's test split -> out_dir (default RUN/analysis): analysis.json,
    spectra.png, head_columns.png, training_curves.png and report.html. Returns out_dir."""
    from sparsehead.runs.metrics_log import read_metrics

    feats = run_features(path, data_overrides, device, seed=seed)
    out = Path(out_dir) if out_dir else RunDir(feats.run_dir).analysis_dir
    labels = feats.labels if (feats.labels >= 0).any() else None
    results = {
        "run_dir": str(feats.run_dir),
        "checkpoint": str(feats.checkpoint),
        "step": feats.step,
        "description": feats.description,
        "data": config.to_dict(feats.cfg)["data"],
        "r": diagnostics(feats.r, labels, feats.views.get("r"), seed=seed),
        "z": diagnostics(feats.z, labels, feats.views.get("z"), seed=seed),
        "head": feats.head,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    figures = [
        (
            "spectra.png",
            spectra_of_run(results, feats.description),
            "Eigenvalue spectra of the test-set covariance of the representation r and the embedding z "
            "(as Song et al. 2023 Fig. 3): left on raw features, right on L2-normalised ones. A drop by many "
            "orders of magnitude marks collapsed dimensions.",
        )
    ]
    if feats.head:
        figures.append(
            (
                "head_columns.png",
                plots.head_figure(feats.head, f"projection head columns ({feats.description})"),
                "Column norms ||W[:, j]|| of the head layer(s) SparseHead acts on, sorted; columns "
                "below the dashed line (support threshold) are counted as pruned.",
            )
        )
    records = read_metrics(feats.run_dir)
    curves = plots.curves_figure(records, f"training curves ({feats.name})")
    if curves is not None:
        figures.append(
            (
                "training_curves.png",
                curves,
                "Training curves from metrics.jsonl: SSL loss, SparseHead penalty, head support "
                "size, and k-NN accuracy where logged.",
            )
        )
    write_outputs(
        out,
        results,
        figures,
        title=f"sparsehead analysis: {feats.name}",
        intro=[
            ("run", str(feats.run_dir)),
            ("checkpoint", f"{feats.checkpoint.name} (step {feats.step})"),
            ("model", feats.description),
            ("data", f"{feats.cfg.data.source} test split, {len(feats.labels)} images"),
        ],
        columns={"representation r": results["r"], "embedding z": results["z"]},
        head=feats.head,
    )
    return out


def spectra_of_run(results: dict, description: str):
    r, z = results["r"], results["z"]
    return plots.spectra_figure(
        [
            (
                "covariance of raw features",
                [
                    (f"representation r (d={r['dim']})", r["spectra"]["raw"]),
                    (f"embedding z (m={z['dim']})", z["spectra"]["raw"]),
                ],
            ),
            (
                "covariance of L2-normalised features",
                [("representation r", r["spectra"]["normalized"]), ("embedding z", z["spectra"]["normalized"])],
            ),
        ],
        f"eigenvalue spectra, test set ({description})",
    )


# --- several runs --------------------------------------------------------------------------------------


def compare_runs(
    paths: Sequence[str | Path], out_dir: str | Path, data_overrides: Sequence[str] = (), device: str = "auto"
) -> Path:
    """Spectra of several runs overlaid (r and z panels), their spectral summaries, one report."""
    if len(paths) < 2:
        raise AnalysisError("--compare needs at least two runs or checkpoints")
    out = Path(out_dir)
    runs, raw_panels, norm_panels = {}, {"r": [], "z": []}, {"r": [], "z": []}
    for path in paths:
        feats = run_features(path, data_overrides, device, with_views=False)
        label = f"{feats.name} ({feats.description})"
        summary = {
            "checkpoint": str(feats.checkpoint),
            "step": feats.step,
            "description": feats.description,
            "r": spectral_summary(feats.r),
            "z": spectral_summary(feats.z),
            "head_support": [h["support"] for h in feats.head],
        }
        runs[label] = summary
        for key in ("r", "z"):
            raw_panels[key].append((label, summary[key]["spectra"]["raw"]))
            norm_panels[key].append((label, summary[key]["spectra"]["normalized"]))
    figures = [
        (
            "spectra_compare.png",
            plots.spectra_figure(
                [("representation r", raw_panels["r"]), ("embedding z", raw_panels["z"])],
                "eigenvalue spectra of the test-set covariance (raw features)",
            ),
            "Eigenvalue spectra of the representation r (left) and the embedding z (right) of each run, "
            "overlaid (as Song et al. 2023 Fig. 1 and 3), raw features.",
        ),
        (
            "spectra_compare_normalized.png",
            plots.spectra_figure(
                [("representation r", norm_panels["r"]), ("embedding z", norm_panels["z"])],
                "eigenvalue spectra of the test-set covariance (L2-normalised features)",
            ),
            "The same spectra on L2-normalised features.",
        ),
    ]
    table = {
        label: {
            f"{key}: {metric}": s[key][metric]
            for key in ("r", "z")
            for metric in ("dim", "collapsed_dims", "effective_rank", "rankme", "alpha_req")
        }
        for label, s in runs.items()
    }
    for label, s in runs.items():
        table[label]["head support"] = ", ".join(map(str, s["head_support"])) or "-"
    write_outputs(
        out,
        {"runs": runs, "created": time.strftime("%Y-%m-%d %H:%M:%S")},
        figures,
        title="sparsehead analysis: comparison of runs",
        intro=[("runs", ", ".join(str(p) for p in paths))],
        columns=table,
        head=None,
        json_name="compare.json",
    )
    return out


# --- embeddings from any model -------------------------------------------------------------------------


def load_npy(path: str | Path, what: str) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"{what} file {path} does not exist")
    try:
        return np.load(path, allow_pickle=False)  # never unpickle: a .npy of objects could run code
    except (ValueError, OSError) as err:
        raise AnalysisError(f"{what} file {path} is not a plain numeric .npy array ({err})") from None


def analyze_features(
    features: str | Path, labels: Optional[str | Path] = None, out_dir: Optional[str | Path] = None, seed: int = 0
) -> Path:
    """The same diagnostics for an (N, d) .npy of embeddings from any model (labels: (N,) ints)."""
    x = load_npy(features, "features")
    if x.ndim != 2 or x.shape[0] < 2 or not np.issubdtype(x.dtype, np.number):
        raise AnalysisError(
            f"features file {features} must hold a numeric (samples, dims) matrix with at "
            f"least 2 rows; got shape {x.shape} dtype {x.dtype}"
        )
    y = None
    if labels is not None:
        y = load_npy(labels, "labels")
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise AnalysisError(
                f"labels file {labels} must hold {x.shape[0]} integer labels (one per row of "
                f"the features); got shape {y.shape} dtype {y.dtype}"
            )
    out = Path(out_dir) if out_dir else Path(features).with_name(Path(features).stem + "-analysis")
    try:
        result = diagnostics(torch.from_numpy(np.ascontiguousarray(x)), y, seed=seed)
    except ValueError as err:
        raise AnalysisError(f"features file {features}: {err}") from None
    results = {
        "features": str(features),
        "labels": str(labels) if labels else None,
        "x": result,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    name = Path(features).name
    figures = [
        (
            "spectra.png",
            plots.spectra_figure(
                [
                    ("covariance of raw features", [(name, result["spectra"]["raw"])]),
                    ("covariance of L2-normalised features", [(name, result["spectra"]["normalized"])]),
                ],
                f"eigenvalue spectra of {name}",
            ),
            "Eigenvalue spectrum of the covariance of the given features: raw (left) and L2-normalised (right).",
        )
    ]
    write_outputs(
        out,
        results,
        figures,
        title=f"sparsehead analysis: {name}",
        intro=[("features", str(features)), ("labels", str(labels) if labels else "none")],
        columns={name: result},
        head=None,
    )
    return out


# --- output: JSON, PNG and the HTML report -------------------------------------------------------------


def json_safe(obj):
    """Non-finite floats become null: strict JSON has no NaN or Infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_outputs(
    out: Path,
    results: dict,
    figures: list,
    title: str,
    intro: list,
    columns: dict,
    head: Optional[list],
    json_name: str = "analysis.json",
) -> None:
    """analysis JSON, every figure as PNG, then report.html embedding them (written last, atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / json_name, json_safe(results))
    embedded = [(name, plots.save_png(fig, out / name), caption) for name, fig, caption in figures]
    atomic_write_text(out / "report.html", render_html(title, intro, columns, head, embedded, json_name))


def _format(value) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "-".join(map(str, value))
    return html.escape(str(value))


def render_html(title: str, intro: list, columns: dict, head: Optional[list], figures: list, json_name: str) -> str:
    """A self-contained report: inline CSS, PNGs as data: URIs, no script and no external URL."""
    esc = html.escape
    metric_keys = [
        k
        for k in dict.fromkeys(k for col in columns.values() for k in col)
        if not any(isinstance(col.get(k), dict) for col in columns.values())
    ]  # not the spectra
    rows = []
    for key in metric_keys:
        cells = "".join(f"<td>{_format(col.get(key, '-'))}</td>" for col in columns.values())
        help_text = METRIC_HELP.get(key.split(": ")[-1], "")
        rows.append(f'<tr><th scope="row">{esc(key)}</th>{cells}<td class="help">{esc(help_text)}</td></tr>')
    header = "".join(f'<th scope="col">{esc(name)}</th>' for name in columns)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;"
        "text-align:right}th[scope=row],td.help{text-align:left}td.help{color:#555;font-size:.9em}"
        "figure{margin:2em 0}img{max-width:100%;height:auto;border:1px solid #eee}"
        "figcaption{font-size:.95em;color:#333}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        "<dl>",
    ]
    parts += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in intro]
    parts += [
        "</dl>",
        "<h2>Scalar metrics</h2>",
        f'<table><thead><tr><th scope="col">metric</th>{header}<th scope="col">meaning</th></tr></thead>',
        "<tbody>",
        *rows,
        "</tbody></table>",
    ]
    if head:
        parts += [
            "<h2>Projection head sparsity</h2>",
            '<table><thead><tr><th scope="col">layer</th><th scope="col">weight shape</th>'
            '<th scope="col">support (columns kept)</th><th scope="col">L2,1 norm</th></tr></thead><tbody>',
        ]
        for i, layer in enumerate(head):
            parts.append(
                f'<tr><th scope="row">{i}</th><td>{layer["shape"][0]} x {layer["shape"][1]}</td>'
                f"<td>{layer['support']} / {layer['shape'][1]} (threshold {layer['support_threshold']:g}"
                f" x largest norm)</td><td>{layer['l21']:.4g}</td></tr>"
            )
        parts.append("</tbody></table>")
    parts.append("<h2>Figures</h2>")
    for i, (name, png, caption) in enumerate(figures, 1):
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure id="{esc(name)}"><img src="data:image/png;base64,{data}" alt="{esc(name)}">'
            f"<figcaption><b>Figure {i}: {esc(name)}</b>. {esc(caption)}</figcaption></figure>"
        )
    parts += [
        f"<p>All numbers and the spectra are in {esc(json_name)} beside this file; every figure is "
        "also saved there as PNG.</p>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
