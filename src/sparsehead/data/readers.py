"""File indexes of the folder data sets: which image files a split holds and their labels.

Layouts: imagefolder (root/train/<class>/..., root/test|val/<class>/...), imagenet
(train/<wnid>/*.JPEG, val/<wnid>/*), imagenet100 (the same folders, CMC's 100 classes listed in
imagenet100.txt) and tinyimagenet (train/<wnid>/images/*.JPEG; val/images/* labelled by
val/val_annotations.txt). The data set has one class list, train/'s, and every split is labelled
by it, by name: a test class train/ lacks is an error when the index is built, a class the test
split lacks moves no other label. A folder is listed with os.scandir (names and types come with the
directory entries: no stat per file), so 1.3M ImageNet paths take seconds; the index is cached in
data.cache_dir and reused while every folder listed and file read keeps its size and mtime (adding,
removing or renaming a file changes its folder's mtime; editing the annotations changes theirs).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sparsehead.data.cache import read_cache, write_cache
from sparsehead.data.errors import DataError
from sparsehead.data.settings import DataConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
INDEX_VERSION = 2  # v2: every split labelled by train's classes; folders and files stamped by size and mtime


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

    # What the record-reading code asks of any split's index (records.py: folders and shards alike).
    @property
    def where(self) -> str:
        return str(self.root)

    def source(self, i: int) -> str:
        """What the decoders open for image i: its file's path (read by them, in one open)."""
        return os.path.join(self.root, self.paths[i])

    def name(self, i: int) -> str:
        return self.source(i)  # its name in messages: the path

    def stamps(self) -> torch.Tensor:
        return stamps(self.full_paths())

    def select(self, keep) -> "FileIndex":
        keep = np.asarray(keep, dtype=np.int64)
        return FileIndex(self.root, [self.paths[i] for i in keep], self.labels[keep], self.classes)


def imagenet100_classes() -> list[str]:
    """CMC's ImageNet-100 wnids (Tian et al. 2019), in the order of the shipped list."""
    text = (Path(__file__).with_name("imagenet100.txt")).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _images_under(folder: str, dirs: list[str]) -> list[str]:
    """Image files below `folder` (recursively, symlinked folders followed), relative to it and
    sorted; appends every directory walked to `dirs` (their stamps validate the cached index). A
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


def _class_folders(folder: Path, names: list[str], label_of: dict[str, int], watched: list[str]):
    """The images of class folders `names` under `folder`, labelled by `label_of` (train's classes)."""
    paths, labels = [], []
    for name in names:
        if not (folder / name).is_dir():
            raise DataError(
                f"class folder {folder / name} is missing; expected {folder}/<class>/<image> "
                f"for each of the {len(label_of)} classes"
            )
        found = _images_under(str(folder / name), watched)
        if not found:
            raise DataError(
                f"class folder {folder / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "remove it or add its images"
            )
        paths += [os.path.join(name, p) for p in found]
        labels += [label_of[name]] * len(found)
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


def _test_classes(folder: Path, train: Path, classes: list[str], others: bool) -> list[str]:
    """The class folders of the test split `folder` that are train's `classes`, in label order. A
    class train lacks is an error (its images would have no label), unless `others` (imagenet100's
    val/ holds all of ImageNet's classes); a class the test split lacks keeps every label in place."""
    present = _subfolders(folder)
    unknown = sorted(set(present) - set(classes))
    if unknown and not others:
        raise DataError(
            f"{folder} holds class folder(s) that {train} lacks: {', '.join(unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''}; every split is labelled by {train}'s class list, by name: "
            "rename each to one of train's classes, remove it, or add its train/ folder"
        )
    known = [name for name in classes if name in set(present)]
    if not known:
        raise DataError(f"{folder} holds none of the classes of {train}; check data.root and data.source")
    return known


def _class_layout(test_names: tuple[str, ...], classes_of, others: bool = False):
    """A layout of class sub-folders under train/ and one of `test_names`; `classes_of(train folder)`
    gives the data set's one class list, whose order makes the labels of every split."""

    def listing(root: Path, split: str, watched: list[str]) -> FileIndex:
        train = _split_folder(root, "train", ())
        classes = classes_of(train)
        label_of = {name: i for i, name in enumerate(classes)}
        folder, names = train, classes
        if split == "test":
            folder = _split_folder(root, "test", test_names)
            watched.append(str(train))  # a class folder added to train/ or removed changes the labels
            names = _test_classes(folder, train, classes, others)
        paths, labels = _class_folders(folder, names, label_of, watched)
        return FileIndex(folder, paths, np.asarray(labels, dtype=np.int64), classes)

    return listing


def _tinyimagenet(root: Path, split: str, watched: list[str]) -> FileIndex:
    train = _split_folder(root, "train", ())
    classes = _subfolders(train)
    if split != "test":
        paths, labels = [], []
        for label, wnid in enumerate(classes):
            images = train / wnid / "images"
            if not images.is_dir():
                raise DataError(f"{images} is missing; Tiny ImageNet's training images lie in train/<wnid>/images/")
            found = _images_under(str(images), watched)
            if not found:
                raise DataError(f"class folder {images} holds no images; remove {train / wnid} or add its images")
            paths += [os.path.join(wnid, "images", p) for p in found]
            labels += [label] * len(found)
        return FileIndex(train, paths, np.asarray(labels, dtype=np.int64), classes)
    folder, notes = root / "val", root / "val" / "val_annotations.txt"
    if not notes.is_file() or not (folder / "images").is_dir():
        raise DataError(
            f"{notes if not notes.is_file() else folder / 'images'} is missing; Tiny ImageNet's val/ holds "
            "images/ and val_annotations.txt (file name, wnid, box per line)"
        )
    watched += [str(train), str(notes)]  # the annotations by size and mtime: an edit in place is seen
    on_disk = {os.path.join("images", p) for p in _images_under(str(folder / "images"), watched)}
    label_of = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for n, line in enumerate(_text_lines(notes), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{notes} line {n}: expected <file name><tab><wnid>..., found {line[:80]!r}")
        name, wnid = fields[:2]
        if wnid not in label_of:
            raise DataError(f"{notes} line {n}: class {wnid} has no train/{wnid} folder; check the download")
        path = _under_images(name, notes, n)
        if path not in on_disk:
            raise DataError(
                f"{notes} line {n}: {folder / path} is not an image file in {folder / 'images'}; "
                "restore it or remove its line"
            )
        paths.append(path)
        labels.append(label_of[wnid])
    if not paths:
        raise DataError(f"{notes} lists no images; restore it from the Tiny ImageNet download")
    return FileIndex(folder, paths, np.asarray(labels, dtype=np.int64), classes)


def _text_lines(path: Path) -> list[str]:
    """The lines of a text file, refused in one line where it is binary or not UTF-8 (damaged)."""
    raw = path.read_bytes()
    bad_at = raw.find(b"\0")
    if bad_at < 0:
        try:
            return raw.decode("utf-8").splitlines()
        except UnicodeDecodeError as err:
            bad_at = err.start
    raise DataError(
        f"{path} is not a text file (byte {bad_at} is binary, not UTF-8 text): it is damaged; "
        "restore it from the data set's download"
    )


def _under_images(name: str, notes: Path, n: int) -> str:
    """val/images/<name> relative to val/, refused where `name` would lead out of val/images/."""
    path = os.path.normpath(os.path.join("images", name))
    if os.path.isabs(name) or path.split(os.sep)[0] != "images" or path == "images":
        raise DataError(
            f"{notes} line {n}: the file name {name!r} leads outside {notes.parent / 'images'}; each "
            "line must name an image in val/images/ (e.g. val_0.JPEG): check the annotation file"
        )
    return path


# The folder layout of each folder source (sources.FOLDER_SOURCES): train/'s classes label every split.
LAYOUTS = {
    "imagefolder": _class_layout(("test", "val"), _subfolders),
    "imagenet": _class_layout(("val",), _subfolders),
    # CMC's 100 of ImageNet's classes: the other folders of train/ and val/ are not this data set's
    "imagenet100": _class_layout(("val",), lambda train: imagenet100_classes(), others=True),
    "tinyimagenet": _tinyimagenet,
}


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)  # gone (or unreadable): never equal to a stamp taken while it was there
    return (st.st_size, st.st_mtime_ns)


def stamps(paths: list[str]) -> torch.Tensor:
    """(size, mtime in ns) of each of `paths`, int64 (n, 2): a folder's changes when a file is added,
    removed or renamed in it; a file's when it is written (edited in place, truncated, replaced)."""
    if not paths:
        return torch.zeros(0, 2, dtype=torch.int64)
    with ThreadPoolExecutor(max_workers=min(16, 4 * (os.cpu_count() or 1))) as pool:  # network disks: stats overlap
        return torch.tensor(list(pool.map(_stamp, paths, chunksize=4096)), dtype=torch.int64)


def index(cfg: DataConfig, split: str) -> FileIndex:
    """The FileIndex of `split` ("test": the test/val folder; otherwise train) of a folder source,
    from data.cache_dir while the folders and files it was read from are unchanged. A folder or file
    that cannot be read is a one-line DataError naming it."""
    root = Path(cfg.root).expanduser().resolve()
    split = "test" if split == "test" else "train"
    cache: Optional[Path] = None
    if cfg.cache_dir:
        key = hashlib.sha256(f"v{INDEX_VERSION} {cfg.source} {root} {split}".encode()).hexdigest()[:24]
        cache = Path(cfg.cache_dir).expanduser() / f"index-{key}.pt"
        found = _read_index(cache)
        if found is not None:
            return found
    watched: list[str] = []
    try:
        result = LAYOUTS[cfg.source](root, split, watched)
    except OSError as err:
        raise DataError(
            f"cannot read {err.filename or root} ({err.strerror or err}) while listing the {split} split of "
            f"data.root={root}; check that it exists and is readable"
        ) from None
    if cache is not None:
        blob = {
            "root": str(result.root),
            "paths": "\n".join(result.paths),
            "labels": torch.from_numpy(result.labels),
            "classes": result.classes,
            "watched": "\n".join(watched),
            "stamps": stamps(watched),
        }
        write_cache(cache, blob, "file index")
    return result


def _read_index(path: Path) -> Optional[FileIndex]:
    found: list[FileIndex] = []

    def unchanged(blob: dict) -> bool:  # read inside read_cache: a malformed blob is a damaged cache
        if not torch.equal(stamps(blob["watched"].split("\n")), blob["stamps"]):
            return False
        paths, labels = blob["paths"].split("\n") if blob["paths"] else [], blob["labels"].numpy()
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        found.append(FileIndex(Path(blob["root"]), paths, labels, list(blob["classes"])))
        return True

    read_cache(path, "file index", "listing the folders again", unchanged)
    return found[0] if found else None
