"""Linear probe on frozen features: multinomial logistic regression, full-batch L-BFGS on the device.

The reference recipes train a linear layer with SGD for 100 epochs over augmented images; what
must match is the result (formulas: docs/references.md, evaluation), and this convex problem solved to convergence takes
a few dozen passes over the features. Features are standardised with training statistics; the L2 weight decay is chosen
on a stratified validation split carved from the training set (never the test set), then the
classifier is refit on the whole training set with that weight decay.

Objective: mean cross-entropy + weight_decay / 2 * ||W||^2 (bias not penalised). It is
scikit-learn's LogisticRegression objective with C = 1 / (weight_decay * n_samples).

Features that do not fit on the device (chunk_rows) stay in CPU memory and every pass reads them
in chunks: the same full-batch objective and solution, in the memory of one chunk.
"""

from __future__ import annotations

import time
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sparsehead.evaluate.errors import EvaluationError

# Half-decade steps, from strong to weak regularisation (each fit warm-starts the next one).
WEIGHT_DECAYS = tuple(float(10.0**e) for e in np.arange(0.0, -6.5, -0.5))
# Host memory a pass over CPU-resident features may use at once (features larger than a quarter of
# it are read in chunks).
CPU_PASS_BYTES = 8 * 2**30


class FeatureRows:
    """Rows of a feature matrix (all, or `rows`), standardised on the fly and served `chunk` rows
    at a time on `device`. One chunk for a set that fits; a set that does not stays where it is
    (CPU memory) and only a chunk at a time is ever on the device, so the probe's memory is the
    features themselves plus one chunk, whatever their number."""

    def __init__(self, x, y, rows=None, stats=None, device=None, chunk: Optional[int] = None):
        self.x, self.y, self.rows = x, y, rows
        self.device = torch.device(device) if device is not None else x.device
        self.mean, self.std = stats if stats is not None else (0.0, 1.0)
        self.chunk = chunk or len(self)

    def __len__(self) -> int:
        return len(self.x) if self.rows is None else len(self.rows)

    def with_stats(self, stats) -> "FeatureRows":
        return FeatureRows(self.x, self.y, self.rows, stats, self.device, self.chunk)

    def chunks(self) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """(standardised features, labels) of consecutive chunks, on the device."""
        for start in range(0, len(self), self.chunk):
            part = slice(start, start + self.chunk) if self.rows is None else self.rows[start : start + self.chunk]
            x = self.x[part].to(self.device, torch.float32, non_blocking=True)
            yield (x - self.mean) / self.std, None if self.y is None else self.y[part].to(self.device)


def feature_stats(data: FeatureRows) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation (n - 1) of the rows, accumulated in float64."""
    total = square = 0
    for x, _ in data.chunks():
        total = total + x.double().sum(dim=0)
        square = square + x.double().pow(2).sum(dim=0)
    n = len(data)
    mean = total / n
    var = ((square - n * mean.pow(2)) / max(n - 1, 1)).clamp_min(0)
    # A dead (constant) feature stays 0, not NaN.
    return mean.float(), var.sqrt().float().clamp_min(1e-6)


def feature_spectrum(data: FeatureRows | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and eigenvectors of the features' second-moment matrix, for preconditioning."""
    data = data if isinstance(data, FeatureRows) else FeatureRows(data, None)
    moment = sum((x.T @ x).double() for x, _ in data.chunks())
    eigvals, eigvecs = torch.linalg.eigh(moment / len(data))
    return eigvals.clamp_min(0), eigvecs


def _preconditioner(spectrum, weight_decay: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """P = U (L + 4 wd)^(-1/2) and its inverse: with w = P v the objective's Hessian in v is close
    to a multiple of the identity (softmax curvature is at most 1/2, typically ~1/4, times L, plus
    wd), so L-BFGS needs several times fewer passes over the data. Same problem, same solution."""
    eigvals, eigvecs = spectrum
    scale = eigvals + 4 * weight_decay + 1e-12 * eigvals.max()
    return (eigvecs * scale.rsqrt()).to(dtype), (eigvecs * scale.sqrt()).T.to(dtype)


def fit_logistic(
    x: FeatureRows | torch.Tensor,
    y: Optional[torch.Tensor],
    num_classes: int,
    weight_decay: float,
    init: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    spectrum: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    max_iter: int = 1000,
    tolerance: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise the probe objective with full-batch L-BFGS (strong-Wolfe line search): each
    evaluation is one pass over the feature rows (`x`: FeatureRows, or a tensor with labels `y`),
    chunk by chunk, so the exact full-batch objective is minimised whether or not they fit.

    `spectrum` (feature_spectrum(x)) turns on preconditioning. Returns the weight
    (d, classes), the bias and the number of L-BFGS iterations used."""
    data = x if isinstance(x, FeatureRows) else FeatureRows(x, y)
    device, n = data.device, len(data)
    d = data.x.shape[1]
    to_w, from_w = _preconditioner(spectrum, weight_decay, torch.float32) if spectrum is not None else (None, None)
    if to_w is not None:
        to_w, from_w = to_w.to(device), from_w.to(device)
    if init is None:
        v = torch.zeros(d, num_classes, device=device)
        b = torch.zeros(num_classes, device=device)
    else:
        v, b = (from_w @ init[0] if from_w is not None else init[0].clone()), init[1].clone()
    v.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [v, b],
        lr=1,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tolerance,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        w = to_w @ v if to_w is not None else v
        # The data term's gradient in w is summed over the chunks, then carried back to v once.
        w_leaf = w.detach().requires_grad_(True)
        loss = 0.5 * weight_decay * w_leaf.pow(2).sum()
        loss.backward()
        for xc, yc in data.chunks():
            part = F.cross_entropy(torch.addmm(b, xc, w_leaf), yc, reduction="sum") / n
            part.backward()
            loss = loss + part.detach()
        w.backward(w_leaf.grad)
        return loss.detach()

    opt.step(closure)
    with torch.no_grad():
        w = to_w @ v if to_w is not None else v
    return w.detach(), b.detach(), opt.state[v]["n_iter"]


def topk_hits(logits: torch.Tensor, y: torch.Tensor, ks: Sequence[int]) -> dict[int, int]:
    """How many samples have their label among the k highest logits, for each k (k <= classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == y[:, None]
    return {k: int(hit[:, :k].any(dim=1).sum()) for k in ks}


def topk_accuracy(logits: torch.Tensor, y: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of samples whose label is among the k highest logits, for each k (k <= classes)."""
    return {f"top{k}": hits / len(y) for k, hits in topk_hits(logits, y, ks).items()}


def stratified_validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices into the training set, each class split in the same proportion."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    present = counts[counts > 0]
    if present.min() < 2:
        raise EvaluationError(
            f"class {int(np.flatnonzero(counts == present.min())[0])} has a single training sample; the "
            "linear probe needs at least 2 per class to carve a validation split (give --weight-decay "
            "to skip the search)"
        )
    n_val = max(round(fraction * len(y)), len(present))  # at least one sample per class
    return train_test_split(np.arange(len(y)), test_size=n_val, random_state=seed, stratify=y)


def probe_accuracy(data: FeatureRows, w: torch.Tensor, b: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """topk_accuracy of the classifier (w, b) over all rows of `data`, chunk by chunk."""
    hits = dict.fromkeys(ks, 0)
    for x, y in data.chunks():
        for k, count in topk_hits(torch.addmm(b, x, w), y, ks).items():
            hits[k] += count
    return {f"top{k}": hits[k] / len(data) for k in ks}


def select_weight_decay(
    data: FeatureRows,
    num_classes: int,
    weight_decays: Sequence[float],
    val_fraction: float,
    seed: int,
    patience: int,
    **fit_options,
) -> tuple[float, dict, tuple]:
    """The weight decay with the best top-1 on a stratified validation split of the rows of `data`.

    Walks `weight_decays` from the strongest to the weakest, each fit warm-started from the
    previous one, and stops once `patience` values in a row score below the best. Returns
    the choice (ties: the stronger), every value's validation top-1, and the chosen fit."""
    fit_idx, val_idx = (
        torch.as_tensor(i) for i in stratified_validation_split(data.y.cpu().numpy(), val_fraction, seed)
    )
    split = {"fit": fit_idx, "val": val_idx}
    fit, val = (FeatureRows(data.x, data.y, split[part], None, data.device, data.chunk) for part in ("fit", "val"))
    # Statistics of the fitting part only: the validation part plays the test set's role.
    stats = feature_stats(fit)
    fit, val = fit.with_stats(stats), val.with_stats(stats)
    spectrum = feature_spectrum(fit)
    validation, best, chosen, path, since_best = {}, None, None, None, 0
    for wd in sorted(weight_decays, reverse=True):
        w, b, _ = fit_logistic(fit, None, num_classes, wd, path, spectrum, **fit_options)
        path = (w, b)
        validation[wd] = probe_accuracy(val, w, b, ks=(1,))["top1"]
        if best is None or validation[wd] > validation[best]:
            best, chosen, since_best = wd, path, 0
        elif validation[wd] < validation[best]:  # a tie is a plateau, not a decline
            since_best += 1
            if since_best >= patience:
                break
        else:
            since_best = 0
    return best, validation, chosen


def chunk_rows(n: int, d: int, device: torch.device) -> Optional[int]:
    """Rows per chunk on `device`: None (all at once, the features moved there) when the features
    and the working copies of a pass take under a quarter of its free memory; otherwise a chunk of
    about 1/16 of it, the features staying in CPU memory."""
    row_bytes = 4 * d * 3  # the row, its standardised copy, the gradient's share
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else CPU_PASS_BYTES
    if n * row_bytes <= free // 4:
        return None
    return max(1024, free // 16 // row_bytes)


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    val_fraction: float = 0.2,
    seed: int = 0,
    patience: int = 3,
    device: torch.device | str = "cpu",
    max_iter: int = 1000,
    tolerance: float = 1e-6,
    chunk: Optional[int] = None,
) -> dict:
    """Top-1/top-5 test accuracy of the probe, the weight decay chosen on a validation split of
    the training set (select_weight_decay; a single value skips the search), then refit on the
    whole training set. Features may live on any device; the fits run on `device`, `chunk` rows
    at a time (default: chunk_rows, all at once where they fit)."""
    start = time.perf_counter()
    device = torch.device(device)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    chunk = chunk or chunk_rows(len(train_x), train_x.shape[1], device)
    if chunk is None:  # they fit: moved to the device once
        train_x, test_x = train_x.to(device), test_x.to(device)
    train = FeatureRows(train_x, train_y.long(), None, None, device, chunk)
    test = FeatureRows(test_x, test_y.long(), None, None, device, chunk)
    fit_options = dict(max_iter=max_iter, tolerance=tolerance)
    validation, init = {}, None
    if len(set(weight_decays)) > 1:
        best, validation, init = select_weight_decay(
            train, num_classes, set(weight_decays), val_fraction, seed, patience, **fit_options
        )
    else:
        best = float(next(iter(weight_decays)))
    stats = feature_stats(train)
    train, test = train.with_stats(stats), test.with_stats(stats)
    w, b, iters = fit_logistic(train, None, num_classes, best, init, feature_spectrum(train), **fit_options)
    result = probe_accuracy(test, w, b, ks=(1, 5))
    result.update(
        weight_decay=best,
        iterations=iters,
        converged=iters < max_iter,
        validation_top1={f"{wd:g}": acc for wd, acc in validation.items()},
        train_top1=probe_accuracy(train, w, b, ks=(1,))["top1"],
        chunk_rows=train.chunk,
        seconds=time.perf_counter() - start,
    )
    return result
