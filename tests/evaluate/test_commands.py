"""`sparsehead evaluate` (all four protocols) and `sparsehead report` end to end on tiny digits runs."""

import csv
import json
import os
import shutil
import statistics

import pytest
import torch

from conftest import TINY, run_cli
from sparsehead import cli, config
from sparsehead.config import AugmentConfig
from sparsehead.data import datasets
from sparsehead.data.datasets import ImageSet
from sparsehead.data.views import ViewGenerator
from sparsehead.evaluate import features
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.evaluate.finetune import SGDRecipe, classifier_accuracy, train_classifier
from sparsehead.evaluate.runner import check_data
from sparsehead.evaluate.semisup import balanced_subset
from sparsehead.runs.model import load_trained
from sparsehead.training.loop import pretrain


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of one config and one run with another lambda, a few steps each."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, extra in {
        "a": ["train.seed=0"],
        "b": ["train.seed=1"],
        "c": ["train.seed=0", "sparsity.lam=1e-3"],
    }.items():
        cfg = config.load(None, TINY + [f"train.out_dir={root}", f"train.run_name={name}", "train.max_steps=3", *extra])
        made[name] = pretrain(cfg)["run_dir"]
    return made


def evaluate(*args):
    assert cli.main(["evaluate", *args]) == 0


def read(run, name):
    return json.loads(open(os.path.join(run, "eval", f"{name}.json")).read())


def test_linear_probe_from_the_command_line(runs):
    proc = run_cli("evaluate", runs["a"], "--protocol", "linear", "--with-z", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    saved = read(runs["a"], "linear")
    assert "written:" in proc.stdout and f'"top1": {saved["r"]["top1"]}' in proc.stdout
    for key in ("r", "z"):
        assert 0.3 < saved[key]["top1"] <= saved[key]["top5"] <= 1  # chance is 0.1
    assert saved["data"]["source"] == "digits" and saved["data"]["test_images"] == 360
    assert saved["checkpoint"].endswith("ckpt-00000003.pt")


def test_knn_agrees_with_pretraining_summary_and_features_are_cached(runs, monkeypatch):
    run = runs["a"]
    evaluate(run, "--protocol", "knn")
    summary = json.loads(open(os.path.join(run, "results.json")).read())
    saved = read(run, "knn")
    # The same checkpoint and data: the end-of-training k-NN is the same number.
    assert saved["r"]["top1"] == pytest.approx(summary["knn5_top1"])
    assert saved["r"]["weighted_top1"] == pytest.approx(summary["knn200_weighted_top1"])
    assert len(os.listdir(os.path.join(run, "features"))) == 2  # train and test, once

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(features, "extract", no_extraction)
    evaluate(run, "--protocol", "ncc", "--with-z")
    ncc = read(run, "ncc")
    assert 0.2 < ncc["r"]["top1"] <= 1 and 0 < ncc["z"]["normalized_top1"] <= 1
    # A rewritten checkpoint of the same name is not served stale features.
    ckpt = load_trained(run).checkpoint_path
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="extracted again"):
        cli.main(["evaluate", run, "--protocol", "ncc"])


def test_an_older_checkpoint_never_overwrites_the_runs_result(runs):
    run = runs["b"]
    newest = load_trained(run).checkpoint_path
    older = newest.with_name("ckpt-00000001.pt")
    shutil.copy(newest, older)
    evaluate(str(older), "--protocol", "ncc")
    evaluate(run, "--protocol", "ncc")
    assert read(run, "ncc-ckpt-00000001")["checkpoint"] == str(older)
    assert read(run, "ncc")["checkpoint"] == str(newest)
    older.unlink()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision.io's PNG codec
def test_another_data_set_from_the_command_line(runs, tmp_path, capsys):
    from torchvision.io import write_png

    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("test", 3)):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                write_png(
                    torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8, generator=gen),
                    str(tmp_path / split / cls / f"{i}.png"),
                )
    data = ["--data", "source=imagefolder", f"root={tmp_path}", "cache_dir=null"]
    eval_dir = os.path.join(runs["a"], "eval")
    before = set(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else set()
    assert cli.main(["evaluate", runs["a"], "--protocol", "knn", *data]) == 2
    assert "--k-weighted 200 is larger than the training set (12 images)" in capsys.readouterr().err
    evaluate(runs["a"], "--protocol", "knn", "--k", "3", "--k-weighted", "12", *data)
    (saved,) = set(os.listdir(eval_dir)) - before  # its own file: the run's knn.json is untouched
    assert saved.startswith("knn@imagefolder-")
    record = read(runs["a"], saved[:-5])
    assert record["data"]["train_images"] == 12 and record["data"]["test_images"] == 6


def test_semisup_and_sgd_augment(runs):
    run = runs["a"]
    evaluate(run, "--protocol", "semisup", "--fractions", "0.01", "0.1", "--epochs", "3", "--batch-size", "64")
    saved = read(run, "semisup")
    assert saved["r"]["1pct"]["labels_used"] == 10 and saved["r"]["10pct"]["labels_used"] == 140
    assert 0 <= saved["r"]["10pct"]["top1"] <= saved["r"]["10pct"]["top5"] <= 1
    assert saved["options"]["lr_backbone"] == 0.005 and saved["options"]["epochs"] == 3
    splits = sorted(os.listdir(os.path.join(run, "splits")))
    assert len(splits) == 2 and all(s.endswith(".json") for s in splits)
    evaluate(run, "--protocol", "linear", "--linear-recipe", "sgd-augment", "--epochs", "2")
    saved = read(run, "linear-sgd-augment")  # beside linear.json, which stays the L-BFGS probe's
    assert saved["options"]["linear_recipe"] == "sgd-augment" and 0 <= saved["r"]["top1"] <= 1
    evaluate(run, "--protocol", "linear", "--linear-recipe", "sgd-imagenet", "--epochs", "1")
    saved = read(run, "linear-sgd-imagenet")  # Barlow Twins' ImageNet recipe
    assert (saved["options"]["lr_head"], saved["options"]["weight_decay"]) == (0.3, 1e-6)
    assert 0 <= saved["r"]["top1"] <= 1


def test_report_groups_seeds(runs, tmp_path, capsys):
    for name in ("a", "b", "c"):
        evaluate(runs[name], "--protocol", "linear", "--weight-decay", "1e-3")
    top1 = [100 * read(runs[n], "linear")["r"]["top1"] for n in ("a", "b")]
    capsys.readouterr()
    assert cli.main(["report", runs["a"], runs["b"], runs["c"], "--out", str(tmp_path / "table")]) == 0
    printed = capsys.readouterr().out
    assert "| SimCLR | mlp | 0 | 2 |" in printed and "| SimCLR | mlp | 0.001 | 1 |" in printed
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert [(r["lambda"], r["runs"]) for r in rows] == [("0", "2"), ("0.001", "1")]
    assert float(rows[0]["linear top-1 mean"]) == pytest.approx(statistics.fmean(top1), abs=1e-3)
    assert float(rows[0]["linear top-1 std"]) == pytest.approx(statistics.stdev(top1), abs=1e-3)
    assert rows[1]["linear top-1 std"] == ""  # one run: no spread to report
    # k-NN from each run's end-of-training results.json when not evaluated separately.
    knn_b = json.loads(open(os.path.join(runs["b"], "results.json")).read())["knn5_top1"]
    assert float(rows[0]["k-NN top-1 n"]) == 2
    assert (tmp_path / "table.md").read_text() in printed
    assert knn_b > 0


def test_finetuning_learns_and_leaves_the_run_untouched(runs):
    """The semi-supervised machinery on 10% of digits (no augmentation, to learn in a few steps)."""
    trained = load_trained(runs["a"])
    train = datasets.load(trained.cfg.data, "train")
    test = datasets.load(trained.cfg.data, "test")
    idx = balanced_subset(train.labels, 0.1, seed=0)
    views = ViewGenerator(AugmentConfig(recipe="none"), 16, trained.state["data_mean"], trained.state["data_std"])
    before = {k: v.clone() for k, v in trained.method.backbone.state_dict().items()}
    accuracy = {}
    for name, lr_backbone in (("frozen", None), ("finetuned", 0.005)):
        recipe = SGDRecipe(epochs=10, batch_size=32, lr_head=0.5, lr_backbone=lr_backbone)
        backbone, classifier = train_classifier(
            trained.method.backbone, train, idx, 10, views, recipe, torch.device("cpu")
        )
        accuracy[name] = classifier_accuracy(backbone, classifier, test, trained.views, torch.device("cpu"))["top1"]
        same = all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
        assert same == (name == "frozen")  # only fine-tuning changes the (copied) backbone
    assert all(torch.equal(before[k], v) for k, v in trained.method.backbone.state_dict().items())
    assert accuracy["frozen"] > 0.4 and accuracy["finetuned"] > 0.6  # chance is 0.1


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/run"], "neither a checkpoint file nor a run folder"),
        (["{empty}"], "holds no checkpoint"),
        (["{a}", "--k", "5000"], "--k 5000 is larger than the training set (1437 images)"),
        (["{a}", "--data", "image_size=32"], "trained on 16x16 images"),
        (["{a}", "--data", "train.epochs=3"], "only data.* keys"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(runs, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(a=runs["a"], empty=tmp_path / "empty") for a in args]
    eval_dir = os.path.join(runs["a"], "eval")
    before = sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []
    mtimes = {f: os.stat(os.path.join(eval_dir, f)).st_mtime_ns for f in before}
    assert cli.main(["evaluate", *args, "--protocol", "knn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    after = sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []
    assert after == before and all(os.stat(os.path.join(eval_dir, f)).st_mtime_ns == mtimes[f] for f in after)
    assert not os.listdir(tmp_path / "empty")


def test_image_checks(runs):
    trained = load_trained(runs["a"])
    data_cfg = trained.cfg.data
    labels = torch.zeros(4, dtype=torch.long)
    gray = ImageSet(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), labels, ["0"])
    with pytest.raises(EvaluationError, match="1 channel.*takes 3"):
        check_data(trained, data_cfg, gray, gray, resize=False)
    # Another source at another size than the checkpoint's is refused unless resized on request.
    big = ImageSet(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), labels, ["0"])
    other = config.DataConfig(source="cifar10", root="x", image_size=16)
    with pytest.raises(EvaluationError, match="32x32.*trained on 16x16.*--resize"):
        check_data(trained, other, big, big, resize=False)
    check_data(trained, other, big, big, resize=True)
    # The run's own source at its native size (8x8 digits trained at 16) is what pretraining saw.
    small = ImageSet(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), labels, ["0"])
    check_data(trained, data_cfg, small, small, resize=False)
    unlabeled = ImageSet(small.images, torch.full((4,), -1), ["0"])
    with pytest.raises(EvaluationError, match="unlabeled"):
        check_data(trained, data_cfg, small, unlabeled, resize=False)
