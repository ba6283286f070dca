"""Nearest class centre, label subsets, image-level fine-tuning and the online monitors."""

import json

import numpy as np
import torch
import torch.nn as nn
from sklearn.neighbors import NearestCentroid

from sparsehead.config import EvalConfig
from sparsehead.evaluate.ncc import ncc_classify
from sparsehead.evaluate.semisup import balanced_subset, load_or_create_split
from sparsehead.training.monitors import OnlineMonitor


def test_ncc_matches_sklearn_nearest_centroid():
    rng = np.random.default_rng(0)
    xtr, ytr = rng.normal(size=(300, 8)) + np.repeat(np.eye(3, 8) * 2, 100, axis=0), np.repeat([0, 1, 2], 100)
    xte = rng.normal(size=(100, 8)) * 2
    expected = NearestCentroid().fit(xtr, ytr).predict(xte)
    ours = ncc_classify(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte))
    np.testing.assert_array_equal(ours.numpy(), expected)
    # Normalised: centres are means of the unit vectors, distances to unit test vectors.

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    expected = NearestCentroid().fit(unit(xtr), ytr).predict(unit(xte))
    np.testing.assert_array_equal(
        ncc_classify(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), normalize=True).numpy(), expected
    )


def test_ncc_never_picks_a_class_absent_from_training():
    xtr = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    pred = ncc_classify(xtr, torch.tensor([0, 2]), torch.tensor([[5.0, 5.1], [0.1, 0.0]]))
    assert pred.tolist() == [2, 0]


def test_one_percent_split_is_class_balanced_and_reproducible(tmp_path):
    labels = torch.tensor(np.random.default_rng(0).integers(0, 10, 5000))  # unequal class sizes
    first = balanced_subset(labels, 0.01, seed=3)
    assert first == balanced_subset(labels, 0.01, seed=3)
    assert first != balanced_subset(labels, 0.01, seed=4)
    assert np.bincount(labels[first].numpy(), minlength=10).tolist() == [5] * 10
    assert len(set(first)) == len(first) == 50
    # Saved once and read back: the file is the split, not the random generator.
    saved = load_or_create_split(tmp_path, "key", labels, 0.01, seed=3)
    path = next((tmp_path / "splits").glob("*1pct*seed3*.json"))
    assert saved == first and json.loads(path.read_text())["indices"] == first
    path.write_text(json.dumps({**json.loads(path.read_text()), "indices": first[:20]}))
    assert load_or_create_split(tmp_path, "key", labels, 0.01, seed=3) == first[:20]


def test_ten_percent_split_caps_at_small_classes():
    labels = torch.tensor([0] * 200 + [1] * 5)
    subset = balanced_subset(labels, 0.1, seed=0)  # 10 per class asked, class 1 has only 5
    assert np.bincount(labels[subset].numpy()).tolist() == [10, 5]


class Toy(nn.Module):
    feature_dim = 4

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 4)
        with torch.no_grad():  # a fixed, well-conditioned map: what is tested is the classifier on top
            self.layer.weight.copy_(torch.eye(4) + 0.1)
            self.layer.bias.zero_()

    def forward(self, x):
        return self.layer(x)


def test_online_linear_classifier_learns_from_detached_r_and_skips_unlabeled():
    torch.manual_seed(0)  # the classifier's initial weights: not whatever earlier tests left
    method = nn.Module()
    method.backbone = Toy()
    monitor = OnlineMonitor(
        EvalConfig(online_linear=True, online_linear_lr=0.05), Toy.feature_dim, 2, torch.device("cpu")
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        y = torch.randint(0, 2, (32,), generator=gen)
        x = torch.randn(32, 4, generator=gen) + 3 * y[:, None].float()
        r = method.backbone(x)  # view 1's r, as the method's forward returns it (not detached)
        method.backbone(3 - x)  # view 2, labels reversed: learning from it would fail the test
        monitor.observe(torch.where(torch.arange(32) < 4, -1, y), r)  # the first 4 unlabeled
    assert method.backbone.layer.weight.grad is None  # the backbone got no gradient
    logs = monitor.logs()
    assert logs["online_linear_acc"] > 0.9 and logs["online_linear_loss"] < 0.3
    assert monitor.logs() == {}  # averages restart after each log
    monitor.observe(y, None)  # a step without a representation (nothing to learn from)
    assert monitor.logs() == {}
    monitor.observe(y, method.backbone(torch.full((32, 4), float("nan"))))  # a non-finite step (train.nonfinite=skip)
    assert monitor.logs() == {} and all(torch.isfinite(p).all() for p in monitor.classifier.parameters())


def test_knn_monitor_runs_every_n_epochs():
    calls = []
    monitor = OnlineMonitor(
        EvalConfig(knn_every=2), 4, 2, torch.device("cpu"), knn=lambda: calls.append(1) or {"knn5_top1": 0.5}
    )
    due = [step for step in range(1, 31) if monitor.end_of_epoch(step, steps_per_epoch=5)]
    assert due == [10, 20, 30] and len(calls) == 3


def test_monitors_log_during_pretraining_and_leave_training_unchanged(tiny_cfg):
    from sparsehead.runs.checkpoint import latest_loadable
    from sparsehead.runs.metrics_log import read_metrics
    from sparsehead.training.loop import pretrain

    base = ["data.subset=256", "train.epochs=2"]  # 4 steps per epoch
    watched = pretrain(tiny_cfg(*base, "train.run_name=watched", "eval.knn_every=1", "eval.online_linear=true"))[
        "run_dir"
    ]
    plain = pretrain(tiny_cfg(*base, "train.run_name=plain"))["run_dir"]
    records = read_metrics(watched)
    online = [r for r in records if "online_linear_acc" in r]
    assert [r["step"] for r in online] == list(range(1, 9))  # every log line, train.log_every=1
    assert all(0 <= r["online_linear_acc"] <= 1 and r["online_linear_loss"] > 0 for r in online)
    # The monitor after epoch 1; the end-of-training k-NN after epoch 2 (not twice).
    assert [r["step"] for r in records if "knn5_top1" in r] == [4, 8]
    # Off by default: only the end-of-training k-NN.
    assert not any("online_linear_acc" in r for r in read_metrics(plain))
    assert [r["step"] for r in read_metrics(plain) if "knn5_top1" in r] == [8]
    # Watching changes nothing: the same weights as the run without monitors.
    a, b = latest_loadable(watched)[1]["model"], latest_loadable(plain)[1]["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
