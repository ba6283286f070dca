"""`--protocol semisup --split FILE`: a list of training image names in the format of SimCLR's
imagenet_subsets/1percent.txt selects exactly those images, in memory and streamed; a bad list
is a clear error before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_FOLDER, run_cli
from sparsehead import cli, config
from sparsehead.data import datasets
from sparsehead.evaluate import EvaluationError, semisup
from sparsehead.evaluate.semisup import split_from_file

WNIDS = ("n01440764", "n01443537")  # ImageNet's layout: <wnid>/<wnid>_<number>.JPEG
PER_CLASS = {"train": 12, "test": 4}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet-like")
    rng = np.random.default_rng(0)
    for split, n in PER_CLASS.items():
        for c, wnid in enumerate(WNIDS):
            (root / split / wnid).mkdir(parents=True)
            for i in rng.choice(20000, size=n, replace=False):
                img = rng.integers(0, 80, size=(24, 24, 3)) + 150 * (np.arange(3) == c)
                Image.fromarray(img.astype(np.uint8)).save(root / split / wnid / f"{wnid}_{i}.JPEG")
    return root


def data_cfg(root, storage):
    return config.load(None, [*TINY_FOLDER, f"data.root={root}", f"data.storage={storage}", "data.workers=0"]).data


def simclr_list(path, names):
    """A split file as SimCLR writes them: one bare file name a line."""
    path.write_text("".join(f"{name}\n" for name in names))
    return path


@pytest.mark.parametrize("storage", ["memory", "stream"])
def test_a_split_file_selects_exactly_the_listed_images(folder, tmp_path, storage):
    train = datasets.load(data_cfg(folder, storage), "train")
    files = sorted((folder / "train").rglob("*.JPEG"))
    listed = [files[i].name for i in (0, 3, 4, 13, 20)]
    indices = split_from_file(simclr_list(tmp_path / "1percent.txt", listed), train)
    assert sorted(train.names[i].split("/")[-1] for i in indices) == sorted(listed)
    # the labels of the chosen images are the classes their names start with
    assert [train.classes[int(train.labels[i])] for i in indices] == [train.names[i][:9] for i in indices]


def test_unknown_names_missing_files_and_sets_without_files_are_clear_errors(folder, tmp_path):
    train = datasets.load(data_cfg(folder, "memory"), "train")
    known = sorted(p.name for p in (folder / "train").rglob("*.JPEG"))[:2]
    bad = simclr_list(tmp_path / "bad.txt", [*known, "n01440764_99999999.JPEG", "n09999999_1.JPEG"])
    with pytest.raises(
        EvaluationError,
        match=r"2 of its 4 names are not images of this training set, e\.g\. "
        r"n01440764_99999999\.JPEG, n09999999_1\.JPEG",
    ):
        split_from_file(bad, train)
    with pytest.raises(EvaluationError, match="no such file"):
        split_from_file(tmp_path / "absent.txt", train)
    with pytest.raises(EvaluationError, match="lists no image names"):
        split_from_file(simclr_list(tmp_path / "empty.txt", []), train)
    digits = datasets.load(config.load(None, ["data.source=digits"]).data, "train")
    with pytest.raises(EvaluationError, match="not read from files.*--fractions"):
        split_from_file(simclr_list(tmp_path / "one.txt", known), digits)


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    proc = run_cli(
        "pretrain",
        *TINY_FOLDER,
        f"data.root={folder}",
        "train.max_steps=2",
        f"train.out_dir={out}",
        "train.run_name=r",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "r"


def test_evaluate_fine_tunes_on_exactly_the_listed_images(folder, run, tmp_path, monkeypatch):
    files = sorted((folder / "train").rglob("*.JPEG"))
    listed = [files[i].name for i in (1, 2, 15)]
    split = simclr_list(tmp_path / "1percent.txt", listed)
    used = []
    real = semisup.train_classifier
    monkeypatch.setattr(
        semisup,
        "train_classifier",
        lambda bb, train, idx, *a: used.append([train.names[i] for i in idx]) or real(bb, train, idx, *a),
    )
    args = [
        "evaluate",
        str(run),
        "--protocol",
        "semisup",
        "--split",
        str(split),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]
    assert cli.main(args) == 0
    assert len(used) == 1 and sorted(n.split("/")[-1] for n in used[0]) == sorted(listed)
    record = json.loads((run / "eval" / "semisup-1percent.json").read_text())
    assert record["r"]["1percent"]["labels_used"] == 3 and record["options"]["split"] == str(split.resolve())
    assert not (run / "eval" / "semisup.json").exists()  # the class-balanced draws' record is another file


def test_a_list_with_unknown_names_stops_evaluate_before_any_work(run, tmp_path, capsys):
    split = simclr_list(tmp_path / "10percent.txt", ["n01440764_1.JPEG.missing"])
    assert cli.main(["evaluate", str(run), "--protocol", "semisup", "--split", str(split), "--device", "cpu"]) == 2
    assert "1 of its 1 names are not images of this training set" in capsys.readouterr().err
    assert not (run / "eval" / "semisup-10percent.json").exists()
