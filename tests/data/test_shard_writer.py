"""`sparsehead shard`: a tiny image folder made from real CIFAR-10 JPEGs, written as WebDataset shards
and read back with Python's tarfile alone (no sparsehead reader): every image once, its bytes as the
source file's, its label its class folder's index by name, shard sizes as asked; a conversion killed
midway, an existing OUT and a full disk; the command's help and a source it cannot read."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import CIFAR10_ROOT, requires_cifar10
from sparsehead.cli import main
from sparsehead.cli.shard import size
from sparsehead.core.atomic import WriteError
from sparsehead.data import shard_writer, tar_writer
from sparsehead.data.errors import DataError
from sparsehead.data.settings import DataConfig
from sparsehead.data.shard_writer import write_shards
from sparsehead.data.tar_writer import Limits

pytestmark = requires_cifar10
CLASSES = ("bird", "airplane", "cat")  # listed out of order: the labels must follow the sorted folder names


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """train/ 3 classes x 8 images, test/ 3 x 4, copied from CIFAR-10; one train image as .JPEG, one
    as PNG (its bytes a PNG), one with dots and a space in its name."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagefolder")
    for split, n in (("train", 8), ("test", 4)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for name in sorted(os.listdir(CIFAR10_ROOT / split / c))[:n]:
                shutil.copyfile(CIFAR10_ROOT / split / c / name, root / split / c / name)
    cat = root / "train" / "cat"
    first, second, third = sorted(cat.iterdir())[:3]
    first.rename(cat / "upper.JPEG")
    Image.open(second).save(cat / "as.png")
    second.unlink()
    third.rename(cat / "a b.c.jpg")
    return root


def cfg_of(root: Path) -> DataConfig:
    return DataConfig(source="imagefolder", root=str(root), cache_dir=None)


def source_files(root: Path, split: str) -> dict[str, tuple[str, int]]:
    """sha256 of each image file of a split -> (its path, its class folder's index among train/'s sorted)."""
    classes = sorted(os.listdir(root / "train"))
    found = {}
    for label, c in enumerate(classes):
        for path in sorted((root / split / c).iterdir()):
            found[hashlib.sha256(path.read_bytes()).hexdigest()] = (str(path), label)
    return found


def read_shards(folder: Path) -> list[list[tuple[str, str, bytes, int]]]:
    """Per shard file in name order: (key, image extension, image bytes, label) of each sample, by tarfile."""
    shards = []
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
        assert len(members) % 2 == 0, path
        samples = []
        for (image, data), (cls, label) in zip(members[::2], members[1::2]):
            key, _, ext = image.partition(".")
            assert cls == f"{key}.cls" and "/" not in key, (image, cls)
            samples.append((key, ext, data, int(label.decode())))
        shards.append(samples)
    return shards


@pytest.fixture(scope="module")
def converted(folder, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shards") / "out"
    return out, write_shards(cfg_of(folder), out, Limits(samples=5), progress=False)


def test_every_image_once_with_its_bytes_and_label(folder, converted):
    out, index = converted
    assert sorted(os.listdir(out)) == ["shards.json", "train", "val"]
    for split, name in (("train", "train"), ("test", "val")):
        expected = source_files(folder, split)
        shards = read_shards(out / name)
        samples = [s for shard in shards for s in shard]
        seen = [hashlib.sha256(data).hexdigest() for _, _, data, _ in samples]
        assert sorted(seen) == sorted(expected), f"{name}: every image exactly once"
        for (key, ext, data, label), sha in zip(samples, seen):
            path, true_label = expected[sha]
            assert label == true_label, (path, label)
            assert ext == {".jpeg": "jpg"}.get(Path(path).suffix.lower(), Path(path).suffix.lower()[1:]), path
        keys = [key for key, *_ in samples]
        assert len(set(keys)) == len(keys) and not any("." in k or " " in k for k in keys)
        assert [len(shard) for shard in shards] == [5] * (len(samples) // 5) + [len(samples) % 5]
        assert len({label for *_, label in shards[0]}) > 1, "a shard holds a mix of classes (shuffled)"
        listed = index["splits"][name]
        assert [s["samples"] for s in listed["shards"]] == [len(shard) for shard in shards]
        for s in listed["shards"]:
            assert s["sha256"] == hashlib.sha256((out / s["file"]).read_bytes()).hexdigest()
        assert listed["per_class"] == [len(os.listdir(folder / split / c)) for c in sorted(CLASSES)]
    assert index["classes"] == sorted(CLASSES)
    assert json.loads((out / "shards.json").read_text()) == index


def test_shard_bytes_and_the_same_shards_on_every_run(folder, converted, tmp_path):
    limit = 2 * tarfile.RECORDSIZE  # 20 KiB: a tar file is a whole number of 10 KiB records
    write_shards(cfg_of(folder), tmp_path / "bytes", Limits(bytes=limit), ("train",), progress=False)
    files = sorted((tmp_path / "bytes" / "train").glob("*.tar"))
    assert len(files) > 2 and all(f.stat().st_size <= limit for f in files)
    assert sum(len(s) for s in read_shards(tmp_path / "bytes" / "train")) == 24
    again = write_shards(cfg_of(folder), tmp_path / "again", Limits(samples=5), threads=1, progress=False)
    assert again["splits"] == converted[1]["splits"], "threads change nothing; the shards are byte-identical"


class Killed(BaseException):
    """The process's end, as the conversion sees it: nothing after it runs."""


def test_killed_midway_resumes_to_the_same_shards(folder, converted, tmp_path, monkeypatch):
    out, write = tmp_path / "out", shard_writer.write_shard
    calls, killing = [], [True]

    def dies_at_the_third(path, *args):
        calls.append(path.name)
        if killing and len(calls) == 3:  # half a shard in its temporary file, then the process is gone
            (path.parent / f".{path.name}.x1y2.tmp").write_bytes(b"half a shard")
            raise Killed
        return write(path, *args)

    monkeypatch.setattr(shard_writer, "write_shard", dies_at_the_third)
    with pytest.raises(Killed):
        write_shards(cfg_of(folder), out, Limits(samples=5), progress=False)
    assert not (out / "shards.json").exists() and (out / ".shard-plan.json").exists()
    with open(out / "train" / "train-000001.tar", "r+b") as f:  # damaged since: written again
        f.truncate(700)
    calls.clear(), killing.clear()
    index = write_shards(cfg_of(folder), out, Limits(samples=5), progress=False)
    assert calls[0] == "train-000001.tar" and len(calls) == 4 + 3, "shard 0 kept, the others written"
    assert index["splits"] == converted[1]["splits"]
    assert sorted(p.name for p in (out / "train").iterdir()) == [f"train-00000{i}.tar" for i in range(5)]
    assert not (out / ".shard-plan.json").exists()
    calls.clear()
    assert write_shards(cfg_of(folder), out, Limits(samples=5), progress=False) == index and not calls


def test_an_existing_out_is_refused_unless_forced(folder, converted, tmp_path):
    out, index = converted
    with pytest.raises(DataError, match=r"other settings \(seed\).*--force"):
        write_shards(cfg_of(folder), out, Limits(samples=5), seed=1, progress=False)
    other = tmp_path / "other"
    (other / "train").mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not empty"):
        write_shards(cfg_of(folder), other, Limits(samples=5), ("train",), progress=False)
    write_shards(cfg_of(folder), other, Limits(samples=5), ("train",), force=True, progress=False)
    assert (other / "notes.txt").read_text() == "mine" and (other / "shards.json").is_file()
    shutil.copytree(out, tmp_path / "copy")
    forced = write_shards(cfg_of(folder), tmp_path / "copy", Limits(samples=12), seed=1, force=True, progress=False)
    assert [s["samples"] for s in forced["splits"]["train"]["shards"]] == [12, 12]
    assert len(list((tmp_path / "copy" / "train").glob("*.tar"))) == 2


def test_a_full_disk_is_one_line_naming_the_shard(folder, tmp_path, monkeypatch, capsys):
    def refuses(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tar_writer._Hashing, "write", refuses)
    out = tmp_path / "out"
    args = ["shard", str(out), "data.source=imagefolder", f"data.root={folder}", "data.cache_dir=null"]
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and f"cannot write {out / 'train' / 'train-000000.tar'}: No space left" in errors[0]
    assert not list((out / "train").iterdir()), "no temporary file is left behind"
    with pytest.raises(WriteError):
        write_shards(cfg_of(folder), tmp_path / "lib", progress=False)
    monkeypatch.undo()  # space freed: the same command finishes the conversion
    assert main(args) == 0 and (out / "shards.json").is_file()


def test_help_and_what_shard_cannot_read(folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["shard", "--help"])
    assert done.value.code == 0 and "data.source=webdataset" in capsys.readouterr().out
    for source in (["data.source=digits"], ["data.source=cifar10", f"data.root={CIFAR10_ROOT}"]):
        assert main(["shard", str(tmp_path / "out"), *source]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "shard reads folder sources (imagefolder, imagenet" in err, err
    assert main(["shard", str(tmp_path / "out"), "train.epochs=3"]) == 2
    assert "data.KEY=VALUE only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["shard", str(tmp_path / "out"), "data.source=digits", "--shard-bytes", "lots"])
    assert "expected a size such as 500MB" in capsys.readouterr().err
    assert [size(t) for t in ("500MB", "2GiB", "1e9", "10kB")] == [5 * 10**8, 2**31, 10**9, 10**4]
    bmp = tmp_path / "bmp"
    shutil.copytree(folder, bmp)
    from PIL import Image

    Image.new("RGB", (4, 4)).save(bmp / "train" / "cat" / "odd.bmp")
    with pytest.raises(DataError, match=r"\.bmp .*odd\.bmp.*jpg, png and webp"):
        write_shards(cfg_of(bmp), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists(), "refused before any work"


def test_the_webdataset_source_reads_the_shards_with_the_folders_class_names(folder, converted):
    """The round trip: what `sparsehead shard` writes, data.source=webdataset reads as the folder source
    reads the folder (the same images decoded, labels and class names), class names from shards.json."""
    from sparsehead.data import datasets

    out, _ = converted

    def by_image(data):  # the shards hold the images shuffled: compare (pixels, label) as sorted lists
        return sorted(zip(map(bytes, data.images.flatten(1).numpy()), data.labels.tolist()))

    for split in ("pretrain", "test"):
        shards, folders = (
            datasets.load(DataConfig(source=source, root=str(root), cache_dir=None, image_size=16), split)
            for source, root in (("webdataset", out), ("imagefolder", folder))
        )
        assert shards.classes == folders.classes == sorted(CLASSES)
        assert by_image(shards) == by_image(folders), split
