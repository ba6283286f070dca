"""The memory budget counts the copies actually held when the cache disk is full: a writable cache
folder without room for the decoded set shares nothing (the build's write fails, and every process
decodes its own), so the node's processes count one copy each (the disk injected small:
shutil.disk_usage)."""

from __future__ import annotations

import shutil

import pytest
from test_stream import data_cfg

from conftest import make_imagefolder
from sparsehead.data import cache, storage
from sparsehead.data.errors import DataError

DECODED = 40 * 3 * 32 * 32  # make_imagefolder(per_class=20): 40 images, decoded at 32 px


def free_disk(monkeypatch, free: int):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12 - free, free))


def test_can_write_asks_for_the_room_the_cache_takes(tmp_path, monkeypatch):
    free_disk(monkeypatch, 1000)
    assert cache.can_write(str(tmp_path / "c"), 1000) and cache.can_write(str(tmp_path / "c"))
    assert not cache.can_write(str(tmp_path / "c"), 1001)
    assert not cache.can_write(None, 0)


@pytest.fixture
def folder(tmp_path):
    make_imagefolder(tmp_path / "d", per_class=20)
    return tmp_path


def cfg_of(tmp_path, **kw):
    return data_cfg(tmp_path / "d", source="imagefolder", image_size=32, cache_dir=tmp_path / "c", **kw)


def test_a_full_cache_disk_counts_a_copy_per_process(folder, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    budget = 2 * DECODED / 1e9  # one copy fits, four do not
    free_disk(monkeypatch, DECODED)  # room for the set: one shared copy
    assert storage.choose(cfg_of(folder, storage="memory", memory_budget_gb=budget), "train") == "memory"
    free_disk(monkeypatch, DECODED - 1)
    with pytest.raises(DataError, match=r"the decoded train set \(40 images at 32 px\) 4 processes of this node"):
        storage.choose(cfg_of(folder, storage="memory", memory_budget_gb=budget), "train")
    assert storage.choose(cfg_of(folder, storage="auto", memory_budget_gb=budget), "train") == "stream"
