"""The files evaluation keeps besides its results: a features cache that cannot be written costs the
next evaluation its time, never this one (a one-line warning, nothing half-written); a damaged saved
semi-supervised split is one error naming the file and the fix."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from sparsehead.core import atomic
from sparsehead.evaluate import features, semisup
from sparsehead.evaluate.errors import EvaluationError


class FakeSet:
    """What cached_extract reads of an evaluation set: its size and fingerprint."""

    def __len__(self):
        return 3

    def fingerprint(self):
        return "0123456789abcdef"


R, Z = torch.arange(6.0).view(3, 2), torch.ones(3, 4)


def _full_disk(monkeypatch):
    def fsync(fd):  # where a delayed allocation finds the disk full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", fsync)


def _cache_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "features"


@pytest.mark.parametrize("fault", ["full-disk", "not-a-folder"])
def test_a_features_cache_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch, fault):
    checkpoint = tmp_path / "ckpt-2.pt"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setattr(features, "extract", lambda *args: (R, Z))
    if fault == "full-disk":
        cache_dir = tmp_path / "features"
        _full_disk(monkeypatch)
    else:
        cache_dir = _cache_under_a_file(tmp_path)
    with pytest.warns(UserWarning, match="features not cached: cannot write .*ckpt-2-0123456789abcdef-test.pt") as w:
        r, z = features.cached_extract(None, FakeSet(), None, torch.device("cpu"), checkpoint, cache_dir, "test")
    assert torch.equal(r, R) and torch.equal(z, Z)
    assert "\n" not in str(w[0].message)
    if fault == "full-disk":
        assert "No space left on device" in str(w[0].message)
        assert list(cache_dir.iterdir()) == []  # no temporary file left behind


@pytest.mark.parametrize(
    "content", [b'{"indices": [1, 2', b"\xff\xfe\x00binary", b"[1, 2, 3]", b'{"indices": ["a"]}', b"{}"]
)
def test_a_damaged_saved_split_is_one_error_naming_it(tmp_path, content):
    labels = torch.arange(10) % 2
    semisup.load_or_create_split(tmp_path, "key", labels, 0.2, seed=0)  # drawn and saved
    (path,) = (tmp_path / "splits").iterdir()
    path.write_bytes(content)
    with pytest.raises(EvaluationError, match="delete it to draw the split again") as caught:
        semisup.load_or_create_split(tmp_path, "key", labels, 0.2, seed=0)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_saved_split_is_drawn_again_the_same(tmp_path):
    labels = torch.arange(40) % 4
    first = semisup.load_or_create_split(tmp_path, "key", labels, 0.25, seed=3)
    (path,) = (tmp_path / "splits").iterdir()
    assert json.loads(path.read_text())["indices"] == first
    path.unlink()  # the fix the error names
    assert semisup.load_or_create_split(tmp_path, "key", labels, 0.25, seed=3) == first


def test_a_split_file_that_is_not_text_is_named(tmp_path):
    split = tmp_path / "1percent.txt"
    split.write_bytes(bytes(range(256)))
    with pytest.raises(EvaluationError, match=f"--split {split}: cannot be read \\(not UTF-8 text\\)"):
        semisup.split_from_file(split, FakeSet())
