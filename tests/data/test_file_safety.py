"""What reading a folder data set does to the file system: one open per streamed image, no handle
left open when a decode fails, the bad-image check done once (cached), a symlink cycle refused
instead of walked forever, and Tiny ImageNet annotation names kept under val/images/."""

from __future__ import annotations

import builtins
import os
import shutil

import pytest
import torch
from test_stream import data_cfg

from conftest import make_imagefolder, write_jpeg
from sparsehead.data import datasets, image_check, readers, stream
from sparsehead.data.crops import CropSpec
from sparsehead.data.errors import DataError

PLAN = (CropSpec(16, (0.2, 1.0), 0.5),) * 2 + (CropSpec(8, (0.05, 0.14), 0.5),)  # two views and a local crop


@pytest.fixture
def opened(monkeypatch):
    """Every file object opened through builtins.open (Pillow's way in) while the test runs."""
    files = []
    real = builtins.open

    def counting(*args, **kwargs):
        files.append(real(*args, **kwargs))
        return files[-1]

    monkeypatch.setattr(builtins, "open", counting)
    return files


def test_a_streamed_image_opens_its_file_once_and_closes_it(tmp_path, opened):
    write_jpeg(tmp_path / "a.jpg", 60, 80)
    opened.clear()
    crops = stream.cut_views(str(tmp_path / "a.jpg"), PLAN, torch.Generator().manual_seed(0))
    assert [c.shape for c in crops] == [(3, 16, 16), (3, 16, 16), (3, 8, 8)]
    assert len(opened) == 1 and opened[0].closed


def test_a_decode_that_fails_after_the_header_leaves_no_file_open(tmp_path, opened):
    write_jpeg(tmp_path / "whole.jpg", 60, 80)
    raw = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) // 2])  # the header reads, the pixels do not
    opened.clear()
    with pytest.raises(DataError, match="cannot read image .*cut.jpg"):
        stream.cut_views(str(tmp_path / "cut.jpg"), PLAN, torch.Generator().manual_seed(0))
    assert len(opened) == 1 and opened[0].closed


def test_a_symlink_cycle_is_refused_with_the_link_named(tmp_path):
    make_imagefolder(tmp_path, per_class=2)
    cfg = data_cfg(tmp_path, source="imagefolder")
    os.symlink(tmp_path / "train" / "cat", tmp_path / "train" / "cat" / "again")  # train/cat/again -> itself
    with pytest.raises(DataError, match="cat/again is .*/train/cat again, a folder that holds it"):
        readers.index(cfg, "train")
    os.remove(tmp_path / "train" / "cat" / "again")
    os.symlink(tmp_path / "train", tmp_path / "train" / "dog" / "up")  # a longer way round
    with pytest.raises(DataError, match="dog/up/dog is .*/train/dog again.*symlink cycle"):
        readers.index(cfg, "train")


def test_a_symlinked_folder_outside_the_tree_is_followed(tmp_path):
    make_imagefolder(tmp_path / "d", per_class=2)
    write_jpeg(tmp_path / "more" / "x.jpg", 20, 20)
    os.symlink(tmp_path / "more", tmp_path / "d" / "train" / "dog" / "more")
    idx = readers.index(data_cfg(tmp_path / "d", source="imagefolder"), "train")
    assert "dog/more/x.jpg" in idx.paths and len(idx) == 5


@pytest.mark.parametrize("name", ["../../secret.JPEG", "/etc/passwd", "..", "images/../../x.JPEG"])
def test_tinyimagenet_annotation_names_must_stay_under_val_images(tmp_path, name):
    write_jpeg(tmp_path / "train" / "n1" / "images" / "n1_0.JPEG", 16, 16)
    write_jpeg(tmp_path / "val" / "images" / "val_0.JPEG", 16, 16)
    notes = tmp_path / "val" / "val_annotations.txt"
    notes.write_text(f"val_0.JPEG\tn1\t0\t0\t1\t1\n{name}\tn1\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="line 2: the file name .* leads outside .*val/images"):
        readers.index(data_cfg(tmp_path, source="tinyimagenet"), "test")
    notes.write_text("val_0.JPEG n1\n")  # spaces, not tabs
    with pytest.raises(DataError, match="line 1: expected <file name><tab><wnid>"):
        readers.index(data_cfg(tmp_path, source="tinyimagenet"), "test")


def test_the_bad_image_check_is_cached_and_rechecks_only_the_bad_and_new_files(tmp_path, monkeypatch):
    make_imagefolder(tmp_path / "d", per_class=6)
    cat, dog = tmp_path / "d" / "train" / "cat", tmp_path / "d" / "train" / "dog"
    (cat / "empty.jpg").write_bytes(b"")
    (dog / "text.jpg").write_text("not an image")
    checked = []
    real = image_check.unreadable
    monkeypatch.setattr(image_check, "unreadable", lambda path: checked.append(os.path.basename(path)) or real(path))
    cfg = data_cfg(
        tmp_path / "d",
        source="imagefolder",
        storage="stream",
        bad_images="skip",
        workers=0,
        cache_dir=tmp_path / "cache",
    )

    def opened(skipped):
        checked.clear()
        with pytest.warns(UserWarning, match=f"skipped {skipped} unreadable"):
            return datasets.load(cfg, "train")

    assert len(opened(2)) == 12 and len(checked) == 14  # every file, once
    assert len(opened(2)) == 12 and sorted(checked) == ["empty.jpg", "text.jpg"]  # only the bad ones again
    shutil.copy(cat / "0.jpg", cat / "empty.jpg")  # repaired in place: taken back at once
    assert len(opened(1)) == 13 and sorted(checked) == ["empty.jpg", "text.jpg"]
    write_jpeg(dog / "new.jpg", 30, 30)  # a new file is checked alone (and the bad one again)
    assert len(opened(1)) == 14 and sorted(checked) == ["new.jpg", "text.jpg"]
