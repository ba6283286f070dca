"""Data sources and views: shapes, splits, ImageFolder decoding, clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from sparsehead import config
from sparsehead.data import datasets
from sparsehead.data.datasets import DataError
from sparsehead.data.views import ViewGenerator


def test_digits_splits_are_disjoint_and_stratified():
    cfg = config.load(None).data
    train, test = datasets.load(cfg, "train"), datasets.load(cfg, "test")
    assert train.images.shape[1:] == (3, 8, 8) and train.images.dtype == torch.uint8
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert sorted(set(test.labels.tolist())) == list(range(10))
    assert int(train.images.max()) == 255


def _write_folder(root, sizes=(("a", 3), ("b", 2)), mode="RGB"):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, count in sizes:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                arr = rng.integers(0, 256, (12, 12, 3 if mode == "RGB" else 4), dtype=np.uint8)
                Image.fromarray(arr, mode).save(root / split / name / f"{i}.png")


def _folder_cfg(tmp_path):
    """The data section of the folder _write_folder made under tmp_path/d, with a cache beside it."""
    overrides = ["data.source=imagefolder", f"data.root={tmp_path / 'd'}", "data.image_size=12"]
    return config.load(None, [*overrides, f"data.cache_dir={tmp_path / 'cache'}"]).data


def test_imagefolder_decodes_exact_pixels_and_labels(tmp_path):
    _write_folder(tmp_path / "d")
    cfg = _folder_cfg(tmp_path)
    data = datasets.load(cfg, "train")
    assert data.classes == ["a", "b"] and data.labels.tolist() == [0, 0, 0, 1, 1]
    first = np.array(Image.open(tmp_path / "d/train/a/0.png")).transpose(2, 0, 1)
    assert torch.equal(data.images[0], torch.from_numpy(first))
    again = datasets.load(cfg, "train")  # from the cache
    assert torch.equal(again.images, data.images)


def test_imagefolder_cache_returns_exactly_the_decoded_images(tmp_path, monkeypatch):
    _write_folder(tmp_path / "d", sizes=(("a", 4), ("b", 3)))
    cfg = _folder_cfg(tmp_path)
    first = datasets.load(cfg, "train")
    assert len(list((tmp_path / "cache").glob("imagefolder-*.pt"))) == 1
    files = sorted((tmp_path / "d/train").rglob("*.png"))
    expected = torch.stack([torch.from_numpy(np.asarray(Image.open(f)).transpose(2, 0, 1).copy()) for f in files])

    def no_decoding(*args):
        raise AssertionError("the cached images were decoded again")

    monkeypatch.setattr(datasets, "decode_resized", no_decoding)
    cached = datasets.load(cfg, "train")
    for data in (first, cached):
        assert data.images.dtype == torch.uint8 and torch.equal(data.images, expected)
        assert data.labels.tolist() == [0] * 4 + [1] * 3 and data.classes == ["a", "b"]


def test_imagefolder_empty_class_is_an_error(tmp_path):
    _write_folder(tmp_path / "d")
    (tmp_path / "d/train/empty").mkdir()
    cfg = config.load(None, ["data.source=imagefolder", f"data.root={tmp_path / 'd'}", "data.cache_dir=null"]).data
    with pytest.raises(DataError, match="empty"):
        datasets.load(cfg, "train")


def test_cifar_without_files_says_how_to_fix(tmp_path):
    cfg = config.load(None, ["data.source=cifar10", f"data.root={tmp_path}"]).data
    with pytest.raises(DataError, match="download=true"):
        datasets.load(cfg, "train")


def test_views_shape_range_and_difference():
    cfg = config.load(None)
    data = datasets.load(cfg.data, "train")
    mean, std = data.channel_stats()
    views = ViewGenerator(cfg.augment, 16, mean, std)
    x1, x2 = views(data.images[:32], torch.Generator().manual_seed(0))
    assert x1.shape == x2.shape == (32, 3, 16, 16)
    assert not torch.allclose(x1, x2)
    lo = (0 - torch.tensor(mean)) / torch.tensor(std)
    hi = (1 - torch.tensor(mean)) / torch.tensor(std)
    assert (x1 >= lo.view(1, 3, 1, 1) - 1e-5).all() and (x1 <= hi.view(1, 3, 1, 1) + 1e-5).all()
    # Same generator seed, same views: augmentation is reproducible.
    y1, _ = views(data.images[:32], torch.Generator().manual_seed(0))
    assert torch.equal(x1, y1)


def test_every_source_has_one_reader():
    """sources.SOURCES names each source once; each is read by a memory loader or a folder layout."""
    from sparsehead.data import readers, sources

    folder = set(sources.FOLDER_SOURCES)
    assert set(readers.LAYOUTS) == folder
    assert set(datasets.MEMORY_LOADERS) == set(sources.NAMES) - set(sources.RECORD_SOURCES)  # records.py reads those
    with pytest.raises(config.ConfigError, match="imagenet100"):  # data.source accepts exactly these names
        config.load(None, ["data.source=imagenet1k"])
