"""File indexes of the folder data sets: which image files a split holds and their labels.

Layouts: imagefolder (root/train/<class>/..., root/test|val/<class>/...), imagenet
(train/<wnid>/*.JPEG, val/<wnid>/*), imagenet100 (the same folders, CMC's 100 classes listed in
imagenet100.txt) and tinyimagenet (train/<wnid>/images/*.JPEG; val/images/* labelled by
val/val_annotations.txt). A folder is listed with os.scandir (names and types come with the
directory entries: no stat per file), so 1.3M ImageNet paths take seconds; the index is cached in
data.cache_dir and reused while no listed directory's mtime has changed (adding or removing a file
changes its directory's mtime).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sparsehead.data.cache import read_cache, write_cache
from sparsehead.data.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
INDEX_VERSION = 1


@dataclass
class FileIndex:
    root: Path  # the split's folder; paths are relative to it
    paths: list[str]
    labels: np.ndarray  # int64, one per path
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def full_paths(self) -> list[str]:
        root = str(self.root)
        return [os.path.join(root, p) for p in self.paths]


def imagenet100_classes() -> list[str]:
    """CMC's ImageNet-100 wnids (Tian et al. 2019), in the order of the shipped list."""
    text = (Path(__file__).with_name("imagenet100.txt")).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _images_under(folder: str, dirs: list[str]) -> list[str]:
    """Image files below `folder` (recursively, symlinked folders followed), relative to it and
    sorted; appends every directory walked to `dirs` (their mtimes validate the cached index). A
    folder that links back to one of its own parents is refused: the walk would never end."""
    st = os.stat(folder)
    found, stack = [], [("", folder, frozenset({(st.st_dev, st.st_ino)}))]
    while stack:
        rel, path, parents = stack.pop()
        dirs.append(path)
        with os.scandir(path) as entries:
            for e in entries:
                if e.is_dir():
                    st = e.stat()  # the link's target: the same (device, inode) means the same folder
                    key = (st.st_dev, st.st_ino)
                    if key in parents:
                        raise DataError(
                            f"{e.path} is {os.path.realpath(e.path)} again, a folder that holds it (a "
                            "symlink cycle); remove the symlink on that path or point it outside the data set"
                        )
                    stack.append((os.path.join(rel, e.name), e.path, parents | {key}))
                elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                    found.append(os.path.join(rel, e.name))
    found.sort()
    return found


def _class_folders(folder: Path, classes: list[str], dirs: list[str]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for label, name in enumerate(classes):
        if not (folder / name).is_dir():
            raise DataError(
                f"class folder {folder / name} is missing; expected {folder}/<class>/<image> "
                f"for each of the {len(classes)} classes"
            )
        found = _images_under(str(folder / name), dirs)
        if not found:
            raise DataError(
                f"class folder {folder / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "remove it or add its images"
            )
        paths += [os.path.join(name, p) for p in found]
        labels += [label] * len(found)
    return paths, labels


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        raise DataError(f"{folder} holds no class sub-folders; expected {folder}/<class>/<image>")
    return classes


def _split_folder(root: Path, split: str, test_names: tuple[str, ...]) -> Path:
    names = test_names if split == "test" else ("train",)
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(
        f"data.root={root} has no {' or '.join(n + '/' for n in names)} sub-folder; an imagefolder "
        "data set is a folder holding train/<class>/*.jpg and test/<class>/*.jpg"
    )


def _class_layout(test_names: tuple[str, ...], classes_of):
    """A layout of class sub-folders under train/ and one of `test_names`; `classes_of(root,
    folder)` gives the classes, whose order makes the labels."""

    def listing(root: Path, split: str, dirs: list[str]) -> FileIndex:
        folder = _split_folder(root, split, test_names)
        classes = classes_of(root, folder)
        paths, labels = _class_folders(folder, classes, dirs)
        return FileIndex(folder, paths, np.asarray(labels, dtype=np.int64), classes)

    return listing


def _tinyimagenet(root: Path, split: str, dirs: list[str]) -> FileIndex:
    classes = _subfolders(_split_folder(root, "train", ()))
    if split != "test":
        folder = root / "train"
        paths, labels = [], []
        for label, wnid in enumerate(classes):
            images = folder / wnid / "images"
            if not images.is_dir():
                raise DataError(f"{images} is missing; Tiny ImageNet's training images lie in train/<wnid>/images/")
            found = _images_under(str(images), dirs)
            if not found:
                raise DataError(f"class folder {images} holds no images; remove {folder / wnid} or add its images")
            paths += [os.path.join(wnid, "images", p) for p in found]
            labels += [label] * len(found)
        return FileIndex(folder, paths, np.asarray(labels, dtype=np.int64), classes)
    folder, notes = root / "val", root / "val" / "val_annotations.txt"
    if not notes.is_file():
        raise DataError(
            f"{notes} is missing; Tiny ImageNet's val/ holds images/ and val_annotations.txt "
            "(file name, wnid, box per line)"
        )
    dirs.append(str(folder))
    label_of = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for n, line in enumerate(notes.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{notes} line {n}: expected <file name><tab><wnid>..., found {line!r}")
        name, wnid = fields[:2]
        if wnid not in label_of:
            raise DataError(f"{notes} line {n}: class {wnid} has no train/{wnid} folder; check the download")
        paths.append(_under_images(name, notes, n))
        labels.append(label_of[wnid])
    return FileIndex(folder, paths, np.asarray(labels, dtype=np.int64), classes)


def _under_images(name: str, notes: Path, n: int) -> str:
    """val/images/<name> relative to val/, refused where `name` would lead out of val/images/."""
    path = os.path.normpath(os.path.join("images", name))
    if os.path.isabs(name) or path.split(os.sep)[0] != "images" or path == "images":
        raise DataError(
            f"{notes} line {n}: the file name {name!r} leads outside {notes.parent / 'images'}; each "
            "line must name an image in val/images/ (e.g. val_0.JPEG): check the annotation file"
        )
    return path


# The folder layout of each folder source (sources.FOLDER_SOURCES).
LAYOUTS = {
    "imagefolder": _class_layout(("test", "val"), lambda root, folder: _subfolders(folder)),
    # val/ is labelled by train/'s classes, so a class missing from val/ keeps every label in place
    "imagenet": _class_layout(("val",), lambda root, folder: _subfolders(_split_folder(root, "train", ()))),
    "imagenet100": _class_layout(("val",), lambda root, folder: imagenet100_classes()),
    "tinyimagenet": _tinyimagenet,
}


def folder_stamps(dirs: list[str]) -> list[int]:
    """The mtimes (ns) of `dirs`: a file added, removed or renamed in one of them changes its stamp."""
    return [os.stat(d).st_mtime_ns for d in dirs]


def index(cfg, split: str) -> FileIndex:
    """The FileIndex of `split` ("test": the test/val folder; otherwise train) of a folder source,
    from data.cache_dir when the folders are unchanged."""
    root = Path(cfg.root).expanduser().resolve()
    split = "test" if split == "test" else "train"
    cache: Optional[Path] = None
    if cfg.cache_dir:
        key = hashlib.sha256(f"v{INDEX_VERSION} {cfg.source} {root} {split}".encode()).hexdigest()[:24]
        cache = Path(cfg.cache_dir).expanduser() / f"index-{key}.pt"
        found = _read_index(cache)
        if found is not None:
            return found
    dirs: list[str] = []
    result = LAYOUTS[cfg.source](root, split, dirs)
    if cache is not None:
        blob = {
            "root": str(result.root),
            "paths": "\n".join(result.paths),
            "labels": torch.from_numpy(result.labels),
            "classes": result.classes,
            "dirs": "\n".join(dirs),
            "stamp": torch.tensor(folder_stamps(dirs)),
        }
        write_cache(cache, blob, "file index")
    return result


def _folders_unchanged(blob: dict) -> bool:
    try:
        return torch.equal(torch.tensor(folder_stamps(blob["dirs"].split("\n"))), blob["stamp"])
    except OSError:
        return False  # a listed folder is gone: list again


def _read_index(path: Path) -> Optional[FileIndex]:
    blob = read_cache(path, "file index", "listing the folders again", _folders_unchanged)
    if blob is None:
        return None
    paths = blob["paths"].split("\n") if blob["paths"] else []
    return FileIndex(Path(blob["root"]), paths, blob["labels"].numpy(), list(blob["classes"]))
