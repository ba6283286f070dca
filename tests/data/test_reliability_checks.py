"""image_check.check_splits: what would stop a run after training (a missing test split, a bad
annotation file, an unreadable streamed image under the default bad_images=fail) is found before
its first step, as one DataError."""

from __future__ import annotations

import shutil

import pytest
from test_stream import data_cfg

from conftest import make_imagefolder, write_jpeg
from sparsehead.data import image_check
from sparsehead.data.errors import DataError


def cfg_of(root, **kw):
    return data_cfg(root, **{"source": "imagefolder", "storage": "stream", "workers": 0, **kw})


def test_good_data_passes_and_a_missing_test_split_is_found_first(tmp_path):
    make_imagefolder(tmp_path, per_class=2)
    image_check.check_splits(cfg_of(tmp_path))
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(DataError, match=r"data.root=.* has no test/ or val/ sub-folder"):
        image_check.check_splits(cfg_of(tmp_path))


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_unreadable_streamed_image_under_fail_is_found_before_training(tmp_path, split):
    make_imagefolder(tmp_path, per_class=2)
    raw = (tmp_path / split / "dog" / "0.jpg").read_bytes()
    (tmp_path / split / "dog" / "0.jpg").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(
        DataError, match=rf"(?s)1 unreadable image\(s\) in .*{split}:\n  .*dog/0.jpg: .*bad_images=skip"
    ):
        image_check.check_splits(cfg_of(tmp_path, cache_dir=tmp_path / "c"))  # the default: fail
    image_check.check_splits(cfg_of(tmp_path, bad_images="skip"))  # skip: left out later, with a warning then


def test_under_skip_a_split_with_no_readable_image_is_an_error(tmp_path):
    make_imagefolder(tmp_path, per_class=2)
    for path in (tmp_path / "test").rglob("*.jpg"):
        path.write_bytes(b"")
    with pytest.raises(DataError, match=r"none of the 6 images in .*test could be read"):
        image_check.check_splits(cfg_of(tmp_path, bad_images="skip"))


def test_a_bad_annotation_file_is_found_before_training(tmp_path):
    write_jpeg(tmp_path / "train" / "n1" / "images" / "n1_0.JPEG", 16, 16)
    write_jpeg(tmp_path / "val" / "images" / "val_0.JPEG", 16, 16)
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn5\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="val_annotations.txt line 1: class n5 has no train/n5 folder"):
        image_check.check_splits(cfg_of(tmp_path, source="tinyimagenet"))


def test_sources_not_read_from_files_have_nothing_to_check(tmp_path):
    image_check.check_splits(data_cfg(tmp_path / "nowhere", source="digits"))
