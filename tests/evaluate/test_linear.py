"""The linear probe against scikit-learn's LogisticRegression on the same features."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from conftest import CIFAR10_ROOT, requires_cifar10
from sparsehead.evaluate.linear import WEIGHT_DECAYS, linear_probe, stratified_validation_split
from sparsehead.evaluate.logistic import (
    CPU_PASS_BYTES,
    FeatureRows,
    chunk_rows,
    feature_spectrum,
    feature_stats,
    fit_logistic,
)

# 1e-1 .. 1e-4: the part of the default grid where digits is not near-separable (weaker decays
# need hundreds of iterations each, too slow for a unit test).
GRID = [wd for wd in WEIGHT_DECAYS if 1e-4 <= wd <= 1e-1]


def sklearn_probe(xtr, ytr, xte, yte, grid=GRID, seed=0, val_fraction=0.2):
    """The reference: the same validation split, C = 1 / (weight_decay * n) over the same grid,
    the best C refit on the whole training set."""
    fit, val = stratified_validation_split(ytr, val_fraction, seed)
    scaler = StandardScaler().fit(xtr[fit])
    scores = {}
    for wd in grid:
        model = LogisticRegression(C=1 / (wd * len(fit)), max_iter=5000, tol=1e-6)
        scores[wd] = model.fit(scaler.transform(xtr[fit]), ytr[fit]).score(scaler.transform(xtr[val]), ytr[val])
    best = max(grid, key=lambda wd: scores[wd])  # ties: the first, i.e. the strongest decay
    scaler = StandardScaler().fit(xtr)
    model = LogisticRegression(C=1 / (best * len(xtr)), max_iter=5000, tol=1e-6).fit(scaler.transform(xtr), ytr)
    return model.score(scaler.transform(xte), yte)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=0, stratify=y)
    return xtr, ytr, xte, yte


def test_probe_matches_sklearn_on_digits(digits):
    xtr, ytr, xte, yte = digits
    ours = linear_probe(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), torch.tensor(yte), weight_decays=GRID)
    reference = sklearn_probe(xtr, ytr, xte, yte)
    assert reference > 0.9  # a meaningful comparison: the probe solves the task
    assert abs(ours["top1"] - reference) <= 0.005
    assert ours["converged"] and 0 <= ours["top1"] <= ours["top5"] <= 1


def test_solver_reaches_sklearn_objective(digits):
    """Preconditioned L-BFGS minimises the same objective as LogisticRegression(C = 1/(wd n))."""
    xtr, ytr, _, _ = digits
    x = StandardScaler().fit_transform(xtr)
    for wd in (1e-1, 1e-3):
        ref = LogisticRegression(C=1 / (wd * len(x)), max_iter=10000, tol=1e-8).fit(x, ytr)
        xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(ytr)
        w, b, _ = fit_logistic(xt, yt, 10, wd, spectrum=feature_spectrum(xt))

        def objective(w, b):
            w = w.double()
            return (F.cross_entropy(xt.double() @ w + b.double(), yt) + 0.5 * wd * w.pow(2).sum()).item()

        ours = objective(w, b)
        theirs = objective(torch.tensor(ref.coef_.T), torch.tensor(ref.intercept_))
        assert ours <= theirs + 1e-5
        assert ours >= theirs - 1e-3  # and the reference is a real minimum, not a worse point


def test_test_labels_never_influence_the_choice(digits):
    """Shuffled test labels change nothing but the reported accuracy: no tuning on the test set."""
    xtr, ytr, xte, yte = digits
    args = (torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte))
    grid = GRID[::2]
    real = linear_probe(*args, torch.tensor(yte), weight_decays=grid)
    shuffled = linear_probe(*args, torch.tensor(np.random.default_rng(0).permutation(yte)), weight_decays=grid)
    assert real["weight_decay"] == shuffled["weight_decay"]
    assert real["validation_top1"] == shuffled["validation_top1"]
    assert shuffled["top1"] < 0.3


def test_validation_split_is_stratified_and_inside_the_training_set(digits):
    _, ytr, _, _ = digits
    fit, val = stratified_validation_split(ytr, 0.2, seed=0)
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == len(ytr)
    np.testing.assert_allclose(np.bincount(ytr[val]) / len(val), np.bincount(ytr) / len(ytr), atol=0.01)


def test_feature_stats_are_the_training_mean_and_std_in_any_chunks():
    train = torch.randn(100, 3) * 5 + 2
    for chunk in (None, 7):
        mean, std = feature_stats(FeatureRows(train, None, chunk=chunk))
        torch.testing.assert_close(mean, train.mean(0))
        torch.testing.assert_close(std, train.std(0))


def test_features_read_in_chunks_give_the_same_probe(digits):
    """Chunks of 97 rows (the path of features that do not fit on the device): the same objective,
    so the same weight decay, accuracy and, within float rounding, the same classifier."""
    xtr, ytr, xte, yte = (torch.tensor(a) for a in digits)
    whole = linear_probe(xtr, ytr, xte, yte, weight_decays=GRID[:3])
    chunked = linear_probe(xtr, ytr, xte, yte, weight_decays=GRID[:3], chunk=97)
    assert chunked["chunk_rows"] == 97 and whole["chunk_rows"] == len(xtr)
    assert chunked["weight_decay"] == whole["weight_decay"]
    assert chunked["validation_top1"] == whole["validation_top1"]
    assert abs(chunked["top1"] - whole["top1"]) <= 1 / len(xte)  # at most one borderline test image


def test_chunk_rows_keeps_a_pass_within_the_memory_budget():
    cpu = torch.device("cpu")
    assert chunk_rows(10_000, 512, cpu) is None  # 61 MB: all at once
    rows = chunk_rows(1_281_167, 2048, cpu)  # ImageNet-1k x ResNet-50: 31 GB of pass data
    assert rows is not None and rows * 2048 * 12 <= CPU_PASS_BYTES // 16


@requires_cifar10
def test_probe_matches_sklearn_on_real_cifar_subset():
    """Random-projection features of real CIFAR-10 pixels: a harder, realistic feature set."""
    from sparsehead import config
    from sparsehead.data import datasets

    cfg = config.load(None, ["data.source=imagefolder", f"data.root={CIFAR10_ROOT}", "data.subset=2000"])
    train, test = datasets.load(cfg.data, "train"), datasets.load(cfg.data, "test")
    test_idx = np.random.default_rng(0).choice(len(test), 1000, replace=False)
    proj = torch.randn(3 * 32 * 32, 128, generator=torch.Generator().manual_seed(0)) / 55

    def feats(imgs):
        return torch.relu((imgs.float().flatten(1) / 255 - 0.5) @ proj)

    xtr, xte = feats(train.images), feats(test.images[test_idx])
    ytr, yte = train.labels, test.labels[test_idx]
    ours = linear_probe(xtr, ytr, xte, yte, weight_decays=GRID)
    reference = sklearn_probe(xtr.numpy(), ytr.numpy(), xte.numpy(), yte.numpy(), GRID)
    assert reference > 0.25
    assert abs(ours["top1"] - reference) <= 0.005
