"""The outputs of `sparsehead analyze`: the JSON of every number, each figure as PNG, and one
self-contained HTML report (inline CSS, PNGs as data: URIs, no script and no external URL)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Optional

from sparsehead.analysis import plots
from sparsehead.core.atomic import atomic_write_json, atomic_write_text

METRIC_HELP = {
    "samples": "feature vectors analysed (test split)",
    "dim": "feature dimension",
    "collapsed_dims": "covariance eigenvalues below 1e-5 x the largest (collapsed dimensions)",
    "collapsed_dims_normalized": "the same on L2-normalised features",
    "effective_rank": "Roy & Vetterli effective rank of the centred features (1..dim; higher = more dimensions used)",
    "rankme": "RankMe (Garrido et al. 2023): smooth rank of the uncentred feature matrix",
    "top_eig_share": "the largest covariance eigenvalue's share of the trace (1 = one direction; 1/dim = isotropic)",
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
