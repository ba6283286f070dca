"""`sparsehead analyze`: diagnostics of a trained run (or of any embeddings) -> JSON, PNG figures and
one self-contained HTML report (images inlined as base64: it opens offline, with no external URL)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from sparsehead import config
from sparsehead.analysis import plots
from sparsehead.analysis.html_report import write_outputs
from sparsehead.analysis.metrics import diagnostics, spectral_summary
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
    """(r1, r2), (z1, z2): features of two augmented views of every image of `data` (its evaluation
    batches through `views`), network in eval mode; filled batch by batch into preallocated tensors."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    out: dict = {}
    method.eval()
    start = 0
    for images in data.eval_batches(batch_size):
        pair = views(images.to(device), gen, multi_crop=False)
        for i, x in enumerate(pair):
            for key, f in zip(("r", "z"), method.embed(x)):
                if key not in out:
                    out[key] = tuple(torch.empty(len(data), f.shape[1]) for _ in range(2))
                out[key][i][start : start + len(f)] = f.float()
        start += len(images)
    return out


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
                "Training curves from metrics.jsonl: SSL loss, the effective rank of r and z "
                "estimated while training (the collapse monitor, on the newest train.collapse_window "
                "embeddings), SparseHead penalty, head support size, and k-NN accuracy where logged.",
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
