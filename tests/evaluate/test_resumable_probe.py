"""The classifier an evaluation trains (SGD linear probe, semi-supervised fine-tuning) saves its
progress at each epoch and on a stop signal, and continues bitwise as if it had never stopped:
in the library (a stop after any batch) and from the command line (SIGTERM, exit status 75, the
same command again)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch

from conftest import TINY, run_cli, start_cli
from sparsehead import config
from sparsehead.config import AugmentConfig
from sparsehead.core.errors import EXIT_INTERRUPTED, Interrupted
from sparsehead.data import datasets
from sparsehead.data.views import ViewGenerator
from sparsehead.evaluate import finetune
from sparsehead.evaluate.finetune import SGDRecipe, train_classifier
from sparsehead.evaluate.progress import Progress
from sparsehead.runs.model import load_trained
from sparsehead.training.loop import pretrain

ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = config.load(None, TINY + [f"train.out_dir={root}", "train.run_name=a", "train.max_steps=2"])
    return pretrain(cfg)["run_dir"]


class StopAfter:
    """StopSignals' stand-in: a signal 'arrives' during batch number `after` (counted from 1)."""

    def __init__(self, after: int):
        self.after, self.reads = after, 0

    def __call__(self, names):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    @property
    def requested(self):
        self.reads += 1
        return "SIGTERM" if self.reads >= self.after else None


@pytest.mark.parametrize(
    "lr_backbone, stop_after", [(None, 3), (0.005, 6)], ids=["frozen-mid-epoch", "fine-tuned-epoch-end"]
)
def test_a_stopped_training_continues_bitwise_exact(run, tmp_path, monkeypatch, lr_backbone, stop_after):
    trained = load_trained(run)
    train = datasets.load(trained.cfg.data, "train")
    views = ViewGenerator(AugmentConfig(), 16, trained.state["data_mean"], trained.state["data_std"])
    recipe = SGDRecipe(epochs=2, batch_size=100, lr_head=0.5, lr_backbone=lr_backbone)
    subset = list(range(600))  # 6 batches an epoch
    cpu = torch.device("cpu")

    def train_with(progress=None):
        return train_classifier(trained.method.backbone, train, subset, 10, views, recipe, cpu, progress)

    unbroken_backbone, unbroken = train_with()
    progress = Progress(tmp_path / "progress.pt", key="job")
    monkeypatch.setattr(finetune, "StopSignals", StopAfter(stop_after))
    with pytest.raises(Interrupted, match="stopped by SIGTERM in epoch 1 of 2"):
        train_with(progress)
    saved = torch.load(progress.path, weights_only=True)
    assert (saved["epoch"], saved["batch"]) == (0, stop_after)
    monkeypatch.undo()
    backbone, classifier = train_with(progress)
    # Kept at the end of training (the protocol removes it once the test set is scored): a stop while
    # scoring continues from the trained state, with no batch trained again.
    assert torch.load(progress.path, weights_only=True)["epoch"] == recipe.epochs
    again = train_with(progress)
    for ours, reference in ((classifier, unbroken), (backbone, unbroken_backbone), (again[1], unbroken)):
        for (name, a), b in zip(ours.state_dict().items(), reference.state_dict().values()):
            assert torch.equal(a, b), name


def test_progress_of_another_job_is_not_continued(run, tmp_path):
    trained = load_trained(run)
    train = datasets.load(trained.cfg.data, "train")
    views = ViewGenerator(AugmentConfig(), 16, trained.state["data_mean"], trained.state["data_std"])
    recipe = SGDRecipe(epochs=1, batch_size=500, lr_head=0.5, lr_backbone=None)
    cpu = torch.device("cpu")
    _, reference = train_classifier(trained.method.backbone, train, None, 10, views, recipe, cpu)
    path = tmp_path / "progress.pt"
    torch.save({"key": "another job", "epoch": 1, "batch": 0}, path)
    with pytest.warns(UserWarning, match="progress of another evaluation"):
        _, classifier = train_classifier(
            trained.method.backbone, train, None, 10, views, recipe, cpu, Progress(path, key="this job")
        )
    assert torch.equal(classifier.weight, reference.weight)


def test_sigterm_to_the_sgd_probe_exits_75_and_the_same_command_continues_it(run, tmp_path):
    args = ["evaluate", str(run), "--protocol", "linear", "--linear-recipe", "sgd-augment", "--epochs", "6"]
    args += ["--batch-size", "256", "--device", "cpu"]
    reference = run_cli(*args, env=ENV)
    assert reference.returncode == 0, reference.stderr[-2000:]
    record_path = os.path.join(run, "eval", "linear-sgd-augment.json")
    unbroken = json.loads(open(record_path).read())
    os.remove(record_path)

    progress_dir = os.path.join(run, "eval", "progress")
    proc = start_cli(*args, env=ENV)
    deadline = time.monotonic() + 300
    while not (os.path.isdir(progress_dir) and os.listdir(progress_dir)):  # the first epoch ended
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_INTERRUPTED, stderr[-2000:]
    assert "preempted: stopped by SIGTERM" in stderr and "run the same command again" in stderr
    assert not os.path.exists(record_path)  # no result from an unfinished training

    continued = run_cli(*args, env=ENV)
    assert continued.returncode == 0 and "continuing from" in continued.stderr, continued.stderr[-2000:]
    result = json.loads(open(record_path).read())
    assert result["r"] == unbroken["r"]  # the same classifier, so exactly the same accuracy
    assert not os.listdir(progress_dir)


def test_a_stop_in_a_later_semisup_fraction_keeps_the_finished_ones(run, monkeypatch, capsys):
    from sparsehead import cli

    args = ["evaluate", str(run), "--protocol", "semisup", "--fractions", "0.1", "0.2", "--epochs", "1"]
    args += ["--batch-size", "128", "--device", "cpu"]
    progress_dir = os.path.join(run, "eval", "progress")
    # 0.1 of digits' 1,437 training images is two batches of 128: the stop arrives in the second fraction.
    monkeypatch.setattr(finetune, "StopSignals", StopAfter(3))
    assert cli.main(args) == EXIT_INTERRUPTED
    kept = {name: torch.load(os.path.join(progress_dir, name), weights_only=True) for name in os.listdir(progress_dir)}
    assert len(kept) == 2 and sorted(saved["epoch"] for saved in kept.values()) == [0, 1]  # the first is done
    monkeypatch.undo()
    capsys.readouterr()
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert err.count("continuing from") == 2 and "epoch 2, batch 0" in err  # the first fraction not trained again
    assert not os.listdir(progress_dir)  # removed once every fraction is scored
