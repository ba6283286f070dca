"""Linear probe on frozen features: multinomial logistic regression, full-batch L-BFGS on the device.

The reference recipes train a linear layer with SGD for 100 epochs over augmented images; what
must match is the result (formulas: docs/references.md, evaluation), and this convex problem solved to convergence takes
a few dozen passes over the features. Features are standardised with training statistics; the L2 weight decay is chosen
on a stratified validation split carved from the training set (never the test set), then the
classifier is refit on the whole training set with that weight decay.

Objective: mean cross-entropy + weight_decay / 2 * ||W||^2 (bias not penalised). It is
scikit-learn's LogisticRegression objective with C = 1 / (weight_decay * n_samples).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sparsehead.evaluate.errors import EvaluationError

# Half-decade steps, from strong to weak regularisation (each fit warm-starts the next one).
WEIGHT_DECAYS = tuple(float(10.0**e) for e in np.arange(0.0, -6.5, -0.5))


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale every feature to zero mean and unit variance with the training set's statistics."""
    mean = train.mean(dim=0)
    std = train.std(dim=0).clamp_min(1e-6)  # a dead (constant) feature stays 0, not NaN
    return [(x - mean) / std for x in (train, *others)]


def feature_spectrum(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and eigenvectors of the features' second-moment matrix, for preconditioning."""
    eigvals, eigvecs = torch.linalg.eigh((x.T @ x).double() / x.shape[0])
    return eigvals.clamp_min(0), eigvecs


def _preconditioner(spectrum, weight_decay: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """P = U (L + 4 wd)^(-1/2) and its inverse: with w = P v the objective's Hessian in v is close
    to a multiple of the identity (softmax curvature is at most 1/2, typically ~1/4, times L, plus
    wd), so L-BFGS needs several times fewer passes over the data. Same problem, same solution."""
    eigvals, eigvecs = spectrum
    scale = eigvals + 4 * weight_decay + 1e-12 * eigvals.max()
    return (eigvecs * scale.rsqrt()).to(dtype), (eigvecs * scale.sqrt()).T.to(dtype)


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    init: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    spectrum: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    max_iter: int = 1000,
    tolerance: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise the probe objective with full-batch L-BFGS (strong-Wolfe line search).

    `spectrum` (feature_spectrum(x)) turns on preconditioning. Returns the weight
    (d, classes), the bias and the number of L-BFGS iterations used."""
    d = x.shape[1]
    to_w, from_w = _preconditioner(spectrum, weight_decay, x.dtype) if spectrum is not None else (None, None)
    if init is None:
        v = torch.zeros(d, num_classes, device=x.device, dtype=x.dtype)
        b = torch.zeros(num_classes, device=x.device, dtype=x.dtype)
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
        loss = F.cross_entropy(torch.addmm(b, x, w), y) + 0.5 * weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        w = to_w @ v if to_w is not None else v
    return w.detach(), b.detach(), opt.state[v]["n_iter"]


def topk_accuracy(logits: torch.Tensor, y: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of samples whose label is among the k highest logits, for each k (k <= classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == y[:, None]
    return {f"top{k}": hit[:, :k].any(dim=1).float().mean().item() for k in ks}


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


def select_weight_decay(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    weight_decays: Sequence[float],
    val_fraction: float,
    seed: int,
    patience: int,
    **fit_options,
) -> tuple[float, dict, tuple]:
    """The weight decay with the best top-1 on a stratified validation split of (x, y).

    Walks `weight_decays` from the strongest to the weakest, each fit warm-started from the
    previous one, and stops once `patience` values in a row score below the best. Returns
    the choice (ties: the stronger), every value's validation top-1, and the chosen fit."""
    fit_idx, val_idx = (
        torch.as_tensor(i, device=x.device) for i in stratified_validation_split(y.cpu().numpy(), val_fraction, seed)
    )
    # Statistics of the fitting part only: the validation part plays the test set's role.
    xfit, xval = standardize(x[fit_idx], x[val_idx])
    spectrum = feature_spectrum(xfit)
    validation, best, chosen, path, since_best = {}, None, None, None, 0
    for wd in sorted(weight_decays, reverse=True):
        w, b, _ = fit_logistic(xfit, y[fit_idx], num_classes, wd, path, spectrum, **fit_options)
        path = (w, b)
        validation[wd] = topk_accuracy(xval @ w + b, y[val_idx], ks=(1,))["top1"]
        if best is None or validation[wd] > validation[best]:
            best, chosen, since_best = wd, path, 0
        elif validation[wd] < validation[best]:  # a tie is a plateau, not a decline
            since_best += 1
            if since_best >= patience:
                break
        else:
            since_best = 0
    return best, validation, chosen


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
) -> dict:
    """Top-1/top-5 test accuracy of the probe, the weight decay chosen on a validation split of
    the training set (select_weight_decay; a single value skips the search), then refit on the
    whole training set. Features may live on any device; the fits run on `device`."""
    start = time.perf_counter()
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    x = train_x.to(device, torch.float32)
    ytr, yte = train_y.to(device).long(), test_y.to(device).long()
    fit_options = dict(max_iter=max_iter, tolerance=tolerance)
    validation, init = {}, None
    if len(set(weight_decays)) > 1:
        best, validation, init = select_weight_decay(
            x, ytr, num_classes, set(weight_decays), val_fraction, seed, patience, **fit_options
        )
    else:
        best = float(next(iter(weight_decays)))
    xtr, xte = standardize(x, test_x.to(device, torch.float32))
    w, b, iters = fit_logistic(xtr, ytr, num_classes, best, init, feature_spectrum(xtr), **fit_options)
    result = topk_accuracy(xte @ w + b, yte, ks=(1, 5))
    result.update(
        weight_decay=best,
        iterations=iters,
        converged=iters < max_iter,
        validation_top1={f"{wd:g}": acc for wd, acc in validation.items()},
        train_top1=topk_accuracy(xtr @ w + b, ytr, ks=(1,))["top1"],
        seconds=time.perf_counter() - start,
    )
    return result
