"""The data caches under faults: a build killed mid-write leaves no temporary file for good (the next
build removes it, never a live writer's), a cache that cannot be written (no folder, no space)
costs speed and never the run, a damaged cache is one warning line naming it, and freshness is
each file's size and mtime (a file corrupted or edited in place is seen)."""

from __future__ import annotations

import errno
import fcntl
import io
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from test_stream import data_cfg

from conftest import SRC, make_imagefolder, write_jpeg
from sparsehead.data import cache, datasets, image_check, readers, storage
from sparsehead.data.errors import DataError


def cfg_of(tmp_path, **kw):
    return data_cfg(tmp_path / "d", **{"source": "imagefolder", "storage": "memory", "cache_dir": tmp_path / "c", **kw})


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


KILLED_BUILD = """
import sys, time, torch
from sparsehead import config
from sparsehead.data import datasets
real = torch.save
def slow(obj, f):  # the decoded set's file half written, then the build hangs until it is killed
    if "images" not in obj:
        return real(obj, f)
    f.write(b"x" * 200_000); f.flush(); print("writing", flush=True); time.sleep(600)
torch.save = slow
cfg = config.load(None, ["data.source=imagefolder", "data.storage=memory", f"data.root={sys.argv[1]}",
                         f"data.cache_dir={sys.argv[2]}"]).data
datasets.load(cfg, "train")
"""


def test_a_killed_build_leaves_a_temp_file_that_the_next_build_removes(tmp_path):
    make_imagefolder(tmp_path / "d", per_class=4)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(tmp_path / "d"), str(tmp_path / "c")],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "writing"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    left = temps(tmp_path / "c")
    assert len(left) == 1 and left[0].startswith(".imagefolder-")  # the half-written cache, for good until now
    assert (tmp_path / "c" / left[0]).stat().st_size >= 200_000
    data = datasets.load(cfg_of(tmp_path), "train")
    assert temps(tmp_path / "c") == [] and len(data) == 8
    assert len(list((tmp_path / "c").glob("imagefolder-*.pt"))) == 1


def test_a_live_writers_temp_file_is_kept(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    live, dead = folder / ".index-aaaa.pt.abcd1234.tmp", folder / ".index-bbbb.pt.efgh5678.tmp"
    live.write_bytes(b"x"), dead.write_bytes(b"x")
    with open(folder / "index-aaaa.pt.lock", "a") as held:  # another writer holds index-aaaa's lock
        fcntl.flock(held, fcntl.LOCK_EX)
        assert cache.remove_stale_temps(folder) == [dead]
        assert live.exists() and not dead.exists()
    assert cache.remove_stale_temps(folder) == [live]  # its writer gone: stale


class FullDisk(io.RawIOBase):
    """A file on a disk that fills after `room` bytes: each later write fails with ENOSPC."""

    def __init__(self, room: int):
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(data)


@pytest.mark.parametrize("fault", ["no space", "no folder"])
def test_a_cache_that_cannot_be_written_costs_speed_not_the_run(tmp_path, monkeypatch, fault):
    make_imagefolder(tmp_path / "d", per_class=3)
    expected = datasets.load(data_cfg(tmp_path / "d", source="imagefolder", storage="memory"), "train")
    cfg = cfg_of(tmp_path)
    if fault == "no space":  # torch.save meets ENOSPC after 100 bytes of every cache file
        real = cache.atomic_write
        monkeypatch.setattr(cache, "atomic_write", lambda path, write: real(path, lambda f: write(FullDisk(100))))
        reason = "No space left on device"
    else:  # the cache folder's place is a file: nothing can be made there
        (tmp_path / "c").write_text("a file, not a folder")
        cfg = cfg_of(tmp_path, cache_dir=tmp_path / "c" / "sub")
        reason = "Not a directory"
    for _ in range(2):
        with pytest.warns(UserWarning, match=rf"could not write the data cache .*imagefolder-.*{reason}.*; continuing"):
            data = datasets.load(cfg, "train")
        assert data.fingerprint() == expected.fingerprint()
    if fault == "no space":
        assert temps(tmp_path / "c") == []  # the failed writes left nothing behind
    else:
        assert not cache.can_write(str(tmp_path / "c" / "sub")) and cache.can_write(str(tmp_path / "ok"))


def test_the_memory_budget_counts_a_copy_per_process_where_the_cache_cannot_be_written(tmp_path, monkeypatch):
    make_imagefolder(tmp_path / "d", per_class=20)  # 40 images: 122,880 bytes decoded at 32 px
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    (tmp_path / "file").write_text("")
    cfg = cfg_of(tmp_path, memory_budget_gb=3e-4)  # one copy fits, four do not
    assert storage.choose(cfg, "train") == "memory"
    cfg = cfg_of(tmp_path, memory_budget_gb=3e-4, cache_dir=tmp_path / "file" / "c")
    with pytest.warns(UserWarning, match="could not write the file index"):
        with pytest.raises(DataError, match="4 processes of this node each hold"):
            storage.choose(cfg, "train")


@pytest.mark.parametrize("what", ["file index", "bad-image list", "data cache"])
def test_a_damaged_cache_is_one_warning_line_naming_it_then_rebuilt(tmp_path, what):
    make_imagefolder(tmp_path / "d", per_class=3)
    cfg = cfg_of(tmp_path)
    image_check.check_splits(cfg)
    expected = datasets.load(cfg, "train").fingerprint()
    prefix = {"file index": "index-", "bad-image list": "badimages-", "data cache": "imagefolder-"}[what]
    for damage in (b"\x00garbage" * 50, None):
        for path in (tmp_path / "c").glob(prefix + "*.pt"):
            raw = path.read_bytes()  # the damaged file replaces it: a set mapped from it keeps its pages
            (tmp_path / "damaged").write_bytes(damage or raw[: len(raw) // 2])
            os.replace(tmp_path / "damaged", path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image_check.check_splits(cfg)
            data = datasets.load(cfg, "train")
        lines = [str(w.message) for w in caught if "damaged" in str(w.message)]
        assert lines and all(line.startswith(f"ignoring damaged {what} ") and "\n" not in line for line in lines)
        assert data.fingerprint() == expected


def test_a_file_corrupted_in_place_is_found_by_its_size_and_mtime(tmp_path):
    make_imagefolder(tmp_path / "d", per_class=3)
    cfg = cfg_of(tmp_path, bad_images="fail")
    image_check.check_splits(cfg)
    victim = tmp_path / "d" / "train" / "dog" / "1.jpg"
    folder_before = os.stat(victim.parent).st_mtime_ns
    raw = victim.read_bytes()
    with open(victim, "r+b") as f:  # in place: the folder's mtime stays
        f.truncate(len(raw) // 2)
    assert os.stat(victim.parent).st_mtime_ns == folder_before
    with pytest.raises(DataError, match=r"1 unreadable image\(s\) in .*train:\n  .*dog/1.jpg"):
        image_check.check_splits(cfg)


def test_tinyimagenet_annotations_edited_in_place_are_read_again(tmp_path):
    for w in ("n1", "n2"):
        write_jpeg(tmp_path / "train" / w / "images" / f"{w}_0.JPEG", 16, 16)
    write_jpeg(tmp_path / "val" / "images" / "val_0.JPEG", 16, 16)
    notes = tmp_path / "val" / "val_annotations.txt"
    notes.write_text("val_0.JPEG\tn1\t0\t0\t1\t1\n")
    cfg = data_cfg(tmp_path, source="tinyimagenet", cache_dir=tmp_path / "c")
    assert readers.index(cfg, "test").labels.tolist() == [0]
    stamp = notes.stat().st_mtime_ns
    with open(notes, "r+") as f:  # the same size, in place: only the file's own mtime moves
        f.write("val_0.JPEG\tn2")
    os.utime(notes, ns=(stamp + 1_000_000_000, stamp + 1_000_000_000))  # a later edit (coarse file clocks)
    assert readers.index(cfg, "test").labels.tolist() == [1]


def test_a_folder_that_cannot_be_listed_is_one_line_naming_it(tmp_path, monkeypatch):
    make_imagefolder(tmp_path / "d", per_class=2)
    real = os.scandir
    blocked = str(tmp_path / "d" / "train" / "dog")

    def scandir(path="."):
        if str(path) == blocked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(readers.os, "scandir", scandir)
    with pytest.raises(DataError, match=r"^cannot read .*train/dog \(Permission denied\) while listing") as err:
        readers.index(data_cfg(tmp_path / "d", source="imagefolder"), "train")
    assert "\n" not in str(err.value)


def test_a_binary_annotation_file_is_one_line_naming_it(tmp_path):
    write_jpeg(tmp_path / "train" / "n1" / "images" / "n1_0.JPEG", 16, 16)
    write_jpeg(tmp_path / "val" / "images" / "val_0.JPEG", 16, 16)
    notes = tmp_path / "val" / "val_annotations.txt"
    for damage in (b"val_0.JPEG\tn1\n\xff\xfe\x00\x01garbled", b"\x89PNG\r\n\x1a\n\x00\x00"):
        notes.write_bytes(damage)
        with pytest.raises(DataError, match=r"val_annotations.txt is not a text file .*restore it") as err:
            readers.index(data_cfg(tmp_path, source="tinyimagenet"), "test")
        assert "\n" not in str(err.value)


def test_the_stale_check_is_quick_to_repeat(tmp_path, monkeypatch):
    """A second check_splits decodes nothing: every file keeps its size and mtime."""
    make_imagefolder(tmp_path / "d", per_class=3)
    cfg = cfg_of(tmp_path)
    image_check.check_splits(cfg)
    monkeypatch.setattr(image_check, "unreadable", lambda path: pytest.fail(f"{path} decoded again"))
    started = time.perf_counter()
    image_check.check_splits(cfg)
    assert time.perf_counter() - started < 5
