"""Figures of the diagnostics and simulations, written as PNG atomically.

matplotlib's object API (Figure, no pyplot) keeps this free of global backend state, so it
works headless and inside notebooks alike.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from sparsehead.core.atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Curve = tuple[str, Sequence[float]]  # (legend label, values)


def new_figure(width: float, height: float) -> Figure:
    """A Figure; matplotlib is imported at the first drawing, not with this module: every command line
    builds every sub-command's parser, and a training run should not wait for a plotting library."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> bytes:
    """Render `fig` to PNG, write it atomically to `path`, return the bytes (for embedding)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    data = buf.getvalue()
    atomic_write(path, lambda f: f.write(data))
    return data


def log_safe(values: Sequence[float], floor_ratio: float = 1e-16) -> np.ndarray:
    """Values for a log axis: zeros and round-off negatives are drawn at floor_ratio x the largest."""
    v = np.asarray(values, dtype=np.float64)
    top = v.max(initial=0.0)
    floor = top * floor_ratio if top > 0 else 1e-300
    return np.clip(v, floor, None)


def spectra_figure(panels: Sequence[tuple[str, Sequence[Curve]]], title: str) -> Figure:
    """One panel per (panel title, curves): sorted eigenvalues on a log axis, as Song et al. 2023 Fig. 1/3."""
    fig = new_figure(5.2 * len(panels), 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, curves) in zip(axes, panels):
        for label, eigs in curves:
            ax.semilogy(np.arange(1, len(eigs) + 1), log_safe(eigs), label=label, lw=1.5)
        ax.set_xlabel("eigenvalue index (descending)")
        ax.set_ylabel("eigenvalue (log scale)")
        ax.set_title(panel_title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def head_figure(layers: Sequence[dict], title: str) -> Figure:
    """Sorted column norms of each penalised head layer, with the support threshold."""
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    for i, layer in enumerate(layers):
        norms = np.asarray(layer["column_norms"])
        tag = f"layer {i} " if len(layers) > 1 else ""
        ax.semilogy(
            np.arange(1, len(norms) + 1),
            log_safe(norms, 1e-12),
            lw=1.5,
            label=f"{tag}{layer['shape'][0]}x{layer['shape'][1]}: support {layer['support']}/{layer['shape'][1]}",
        )
        if norms.size and norms.max() > 0:
            ax.axhline(layer["support_threshold"] * norms.max(), ls="--", lw=1, color="gray")
    ax.set_xlabel("input feature (column), sorted by norm")
    ax.set_ylabel("column norm ||W[:, j]|| (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title="dashed: support threshold", title_fontsize=8)
    return fig


def curve_panels(records: Sequence[dict]) -> list[tuple[str, list[str]]]:
    """The training-curve panels metrics.jsonl can fill: (panel title, keys)."""
    keys = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float))})
    panels = [
        ("SSL loss", [k for k in keys if k == "loss"]),
        ("effective rank while training", [k for k in keys if k.endswith("/effective_rank")]),
        ("SparseHead penalty (lambda x L2,1)", [k for k in keys if k == "penalty"]),
        ("head support size", [k for k in keys if k.endswith("/support")]),
        ("k-NN top-1 accuracy", [k for k in keys if k.startswith("knn")]),
    ]
    return [(title, ks) for title, ks in panels if ks]


def curves_figure(records: Sequence[dict], title: str) -> Optional[Figure]:
    """Loss, effective rank of r and z, penalty, support size and k-NN against the step (None when
    nothing was logged)."""
    panels = curve_panels(records)
    if not panels:
        return None
    fig = new_figure(4.2 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, keys) in zip(axes, panels):
        for key in keys:
            pts = [(r["step"], r[key]) for r in records if key in r and "step" in r]
            steps, values = zip(*pts)
            ax.plot(steps, values, marker="o" if len(pts) < 5 else None, label=key, lw=1.3)
        ax.set_xlabel("step")
        ax.set_title(panel_title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def evolution_figure(panels: Sequence[tuple[str, str, np.ndarray, np.ndarray]], title: str) -> Figure:
    """One panel per (title, ylabel, steps (T,), values (T, k)): each of the k values against the step."""
    fig = new_figure(4.6 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, ylabel, steps, values) in zip(axes, panels):
        values = np.asarray(values)
        for j in range(values.shape[1]):  # colour runs from the largest value (dark) to the smallest
            ax.semilogy(steps, log_safe(values[:, j], 1e-20), lw=1.2, color=_rank_colour(j, values.shape[1]))
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return fig


def _rank_colour(j: int, n: int):
    import matplotlib

    return matplotlib.colormaps["viridis"](j / max(n - 1, 1))


def lines_figure(
    panels: Sequence[tuple[str, str, str, Sequence[tuple[str, Sequence[float], Sequence[float]]]]],
    title: str,
    logx: bool = True,
    logy: bool = True,
) -> Figure:
    """Panels of (title, xlabel, ylabel, [(label, x, y), ...]) line plots."""
    fig = new_figure(5.0 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, xlabel, ylabel, lines) in zip(axes, panels):
        for label, x, y in lines:
            ax.plot(x, y, marker="o", ms=3, lw=1.3, label=label)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def amplitude_figure(
    amplitudes: Sequence[float],
    final: np.ndarray,
    steps: Sequence[int],
    history: np.ndarray,
    shown_amplitude: float,
    title: str,
) -> Figure:
    """Left: final singular values of W per amplitude (Jing et al. 2022 Fig. 3); right: one run's
    singular values over training."""
    fig = new_figure(10.4, 4.0)
    left, right = fig.subplots(1, 2)
    for k, sv in zip(amplitudes, final):
        left.semilogy(np.arange(1, len(sv) + 1), log_safe(sv, 1e-20), marker="o", ms=3, label=f"k = {k:g}")
    left.set_xlabel("singular value index (descending)")
    left.set_ylabel("singular value of W (log scale)")
    left.set_title("after training, per augmentation amplitude k", fontsize=10)
    left.legend(fontsize=8)
    left.grid(True, alpha=0.3)
    for j in range(history.shape[1]):
        right.semilogy(steps, log_safe(history[:, j], 1e-20), lw=1.2, color=_rank_colour(j, history.shape[1]))
    right.set_xlabel("training step")
    right.set_ylabel("singular value of W (log scale)")
    right.set_title(f"over training, k = {shown_amplitude:g}", fontsize=10)
    right.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return fig
