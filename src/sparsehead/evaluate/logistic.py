"""The linear probe's solver: multinomial logistic regression on feature rows, full-batch L-BFGS on
the device (the probe's recipe and its protocol: linear.py).

Objective: mean cross-entropy + weight_decay / 2 * ||W||^2 (bias not penalised). It is
scikit-learn's LogisticRegression objective with C = 1 / (weight_decay * n_samples).

Features that do not fit on the device (chunk_rows) stay in CPU memory and every pass reads them
in chunks: the same full-batch objective and solution, in the memory of one chunk.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

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


def chunk_rows(n: int, d: int, device: torch.device) -> Optional[int]:
    """Rows per chunk on `device`: None (all at once, the features moved there) when the features
    and the working copies of a pass take under a quarter of its free memory; otherwise a chunk of
    about 1/16 of it, the features staying in CPU memory."""
    row_bytes = 4 * d * 3  # the row, its standardised copy, the gradient's share
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else CPU_PASS_BYTES
    if n * row_bytes <= free // 4:
        return None
    return max(1024, free // 16 // row_bytes)


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


def probe_accuracy(data: FeatureRows, w: torch.Tensor, b: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Fraction of the rows of `data` whose label is among the k highest logits of the classifier
    (w, b), for each k, chunk by chunk."""
    hits = dict.fromkeys(ks, 0)
    for x, y in data.chunks():
        for k, count in topk_hits(torch.addmm(b, x, w), y, ks).items():
            hits[k] += count
    return {f"top{k}": hits[k] / len(data) for k in ks}
