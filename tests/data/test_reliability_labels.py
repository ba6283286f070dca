"""One class list per data set: train/'s, by name, labels every split of every folder layout. A
test class train/ lacks is an error naming it when the index is built; a class the test split
lacks moves no other label (it once shifted every later label, and k-NN scored chance on colours
any classifier separates)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_stream import data_cfg

from conftest import write_jpeg
from sparsehead.data import datasets, readers
from sparsehead.data.errors import DataError

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0), "white": (255, 255, 255)}


def solid(path, rgb) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), rgb, dtype=np.uint8)).save(path)


def colour_folder(root, test_classes) -> None:
    for name, rgb in COLOURS.items():
        for i in range(2):
            solid(root / "train" / name / f"{i}.png", rgb)
    for name in test_classes:
        solid(root / "test" / name / "0.png", COLOURS[name])


def nearest_label(train, test) -> np.ndarray:
    """1-NN on the pixels: the independent check of what the labels mean."""
    x = train.images.reshape(len(train), -1).float()
    q = test.images.reshape(len(test), -1).float()
    return train.labels[((q[:, None] - x[None]) ** 2).sum(-1).argmin(1)].numpy()


@pytest.mark.parametrize("storage", ["memory", "stream"])
def test_a_test_split_lacking_a_class_keeps_every_label_by_name(tmp_path, storage):
    colour_folder(tmp_path, ["blue", "red", "white"])  # no green: red and white once slid down one label
    cfg = data_cfg(tmp_path, source="imagefolder", storage=storage, workers=0)
    train, test = datasets.load(cfg, "train"), datasets.load(cfg, "test")
    assert test.classes == train.classes == ["blue", "green", "red", "white"]
    assert [test.classes[label] for label in test.labels.tolist()] == [n.split("/")[0] for n in test.names]
    assert test.labels.tolist() == [0, 2, 3]
    if storage == "memory":  # the colours agree with the labels: a nearest neighbour scores 100%
        assert (nearest_label(train, test) == test.labels.numpy()).all()


@pytest.mark.parametrize("source,test_dir", [("imagefolder", "test"), ("imagefolder", "val"), ("imagenet", "val")])
def test_a_test_class_unknown_to_train_is_an_error_naming_it(tmp_path, source, test_dir):
    for name in ("n1", "n2"):
        write_jpeg(tmp_path / "train" / name / "a.JPEG", 12, 12)
    for name in ("n1", "n3", "n4"):
        write_jpeg(tmp_path / test_dir / name / "a.JPEG", 12, 12)
    with pytest.raises(DataError, match=rf"{test_dir} holds class folder\(s\) that .*train lacks: n3, n4; every split"):
        readers.index(data_cfg(tmp_path, source=source), "test")


def test_imagenet_val_lacking_a_class_and_imagenet100_val_holding_more(tmp_path):
    wnids = readers.imagenet100_classes()
    for w in wnids[:3] + ["n99999999"]:
        write_jpeg(tmp_path / "train" / w / "t.JPEG", 12, 12)
        if w != wnids[1]:
            write_jpeg(tmp_path / "val" / w / "v.JPEG", 12, 12)
    val = readers.index(data_cfg(tmp_path, source="imagenet"), "test")
    assert [val.classes[label] for label in val.labels] == [p.split("/")[0] for p in val.paths]
    assert len(val.classes) == 4 and len(val) == 3
    for w in wnids[3:]:  # imagenet100 needs its 100 train folders; val/ holds n99999999 too: not its class
        write_jpeg(tmp_path / "train" / w / "t.JPEG", 12, 12)
    val = readers.index(data_cfg(tmp_path, source="imagenet100"), "test")
    assert val.classes == wnids and val.paths == [f"{wnids[0]}/v.JPEG", f"{wnids[2]}/v.JPEG"]
    assert val.labels.tolist() == [0, 2]


def test_tinyimagenet_val_labelled_by_train_classes_and_its_files_checked(tmp_path):
    for w in ("n1", "n2", "n3"):
        write_jpeg(tmp_path / "train" / w / "images" / f"{w}_0.JPEG", 16, 16)
    for i in range(2):
        write_jpeg(tmp_path / "val" / "images" / f"val_{i}.JPEG", 16, 16)
    notes = tmp_path / "val" / "val_annotations.txt"
    notes.write_text("val_0.JPEG\tn3\t0\t0\t1\t1\nval_1.JPEG\tn1\t0\t0\t1\t1\n")  # no n2 in val
    val = readers.index(data_cfg(tmp_path, source="tinyimagenet"), "test")
    assert val.classes == ["n1", "n2", "n3"] and val.labels.tolist() == [2, 0]
    notes.write_text("val_0.JPEG\tn3\t0\t0\t1\t1\nval_9.JPEG\tn1\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"line 2: .*val/images/val_9.JPEG is not an image file in .*restore it"):
        readers.index(data_cfg(tmp_path, source="tinyimagenet"), "test")
