"""Bad data in an ImageFolder: unreadable files reported by path (fail, or skip with a count),
odd colour modes converted to RGB, and data that cannot train refused before training starts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CIFAR10_ROOT
from sparsehead import config
from sparsehead.data import datasets, decode
from sparsehead.runs import checkpoint
from sparsehead.training.loop import pretrain
from sparsehead.training.setup import TrainingError

SIZE = 8
rng = np.random.default_rng(0)


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def make_folder(root: Path, bad: bool = True) -> tuple[dict[Path, np.ndarray], list[Path]]:
    """train/{cat,dog} + test/{cat,dog}; returns {good file: expected RGB (H, W, 3)} and the bad files."""
    good: dict[Path, np.ndarray] = {}
    bad_files: list[Path] = []

    def put(rel: str, data: bytes, expected=None):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if expected is None:
            bad_files.append(path)
        elif rel.startswith("train/"):
            good[path] = expected

    for split in ("train", "test"):
        for c, name in enumerate(("cat", "dog")):
            for i in range(3):
                arr = rgb(10 * c + i)
                put(f"{split}/{name}/good_{i}.png", png_bytes(Image.fromarray(arr)), arr)
    rgba = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    put("train/cat/rgba.png", png_bytes(Image.fromarray(rgba, "RGBA")), rgba[..., :3])  # alpha dropped
    gray = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    put("train/cat/gray.png", png_bytes(Image.fromarray(gray, "L")), np.repeat(gray[..., None], 3, axis=2))
    palette = Image.fromarray(rgb(7)).convert("P")
    put("train/cat/palette.png", png_bytes(palette), np.array(palette.convert("RGB")))
    deep = rng.integers(0, 2**16, (SIZE, SIZE), dtype=np.uint16)
    put(
        "train/cat/sixteen_bit.png",
        png_bytes(Image.fromarray(deep)),
        np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, axis=2),
    )
    bmp = rgb(8)
    put("train/cat/scan.bmp", png_bytes(Image.fromarray(bmp), "BMP"), bmp)  # a format torchvision lacks
    if bad:
        jpeg = png_bytes(Image.fromarray(rgb(9)), "JPEG")
        put("train/dog/truncated.jpg", jpeg[: len(jpeg) // 2])
        put("train/dog/not_an_image.jpg", b"this is a text file with a .jpg name")
        put("train/dog/empty.png", b"")
        put("train/cat/truncated.png", png_bytes(Image.fromarray(rgb(11)))[:60])
    return good, bad_files


def folder_cfg(root: Path, tmp_path: Path, *overrides: str) -> config.Config:
    return config.load(
        None,
        [
            "data.source=imagefolder",
            f"data.root={root}",
            f"data.image_size={SIZE}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "model.width=4",
            "head.hidden_dim=16",
            "head.out_dim=8",
            "train.batch_size=4",
            "train.progress=false",
            f"train.out_dir={tmp_path / 'runs'}",
            *overrides,
        ],
    )


@pytest.fixture(params=["torchcodec", "pillow"])
def decoder(request, monkeypatch):
    """Both decoding paths: TorchCodec (where it loads) and Pillow alone (where it does not)."""
    if request.param == "pillow":
        monkeypatch.setattr(decode, "torchcodec_decoders", lambda: None)
    elif decode.torchcodec_decoders() is None:
        pytest.skip("torchcodec does not import or load here; the pillow case covers this machine")
    assert decode.decoder_name() == request.param
    return request.param


def test_unreadable_images_fail_listing_every_path(tmp_path, decoder):
    _, bad = make_folder(tmp_path / "data")
    with pytest.raises(datasets.DataError) as err:
        datasets.load(folder_cfg(tmp_path / "data", tmp_path).data, "pretrain")
    msg = str(err.value)
    assert f"{len(bad)} unreadable image(s)" in msg and "data.bad_images=skip" in msg
    for path in bad:
        assert str(path) in msg
    assert ".cpp" not in msg  # decoder messages without their C++ source locations
    for name in ("rgba.png", "gray.png", "palette.png", "sixteen_bit.png", "scan.bmp"):
        assert name not in msg


def test_skip_leaves_out_and_counts_bad_images_and_converts_the_rest_to_rgb(tmp_path, decoder):
    good, bad = make_folder(tmp_path / "data")
    cfg = folder_cfg(tmp_path / "data", tmp_path, "data.bad_images=skip")
    with pytest.warns(UserWarning) as warned:
        data = datasets.load(cfg.data, "pretrain")
    messages = "\n".join(str(w.message) for w in warned)
    assert all(f"skipping unreadable image {path}" in messages for path in bad)
    assert f"skipped {len(bad)} unreadable image(s) of {len(good) + len(bad)}" in messages
    assert data.skipped == len(bad) and len(data) == len(good)
    assert data.images.dtype == torch.uint8 and data.images.shape == (len(good), 3, SIZE, SIZE)
    expected = [good[p] for p in sorted(good, key=lambda p: (p.parent.name, p))]  # class, then path
    for i, arr in enumerate(expected):
        assert torch.equal(data.images[i], torch.from_numpy(arr).permute(2, 0, 1)), i
    assert data.labels.tolist() == [0] * 8 + [1] * 3
    # a cache written in skip mode is not used to hide the bad files from fail mode
    with pytest.raises(datasets.DataError, match="unreadable"):
        datasets.load(folder_cfg(tmp_path / "data", tmp_path).data, "pretrain")
    cached = datasets.load(cfg.data, "pretrain")
    assert cached.skipped == len(bad) and torch.equal(cached.images, data.images)


def test_jpegs_decode_to_pillows_pixels(tmp_path, decoder):
    """Baseline, progressive, 4:4:4, grey and CMYK JPEGs (and real CIFAR-10 ones where present):
    the pixels Pillow's own decoder gives, so caches built by either path agree."""
    pic = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8))
    files = []
    for i, (img, options) in enumerate(
        [
            (pic, {}),
            (pic, {"progressive": True}),
            (pic, {"subsampling": 0}),
            (pic.convert("L"), {}),
            (pic.convert("CMYK"), {}),
        ]
    ):
        files.append(tmp_path / f"{i}.jpg")
        img.save(files[-1], "JPEG", **options)
    files += sorted((CIFAR10_ROOT / "train" / "cat").glob("*.jpg"))[:20]
    for f in files:
        with Image.open(f) as im:
            expected = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(decode.read_rgb(f), expected), f


def test_training_without_skipped_images_says_how_many(tmp_path):
    make_folder(tmp_path / "data")
    cfg = folder_cfg(tmp_path / "data", tmp_path, "data.bad_images=skip", "train.epochs=1")
    with pytest.warns(UserWarning) as warned:
        pretrain(cfg, tmp_path / "run")
    assert "training without 4 unreadable image(s) (data.bad_images=skip)" in [str(w.message) for w in warned]


def test_a_folder_of_only_unreadable_images_is_a_clear_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "data" / "train" / name).mkdir(parents=True)
        (tmp_path / "data" / "train" / name / "x.jpg").write_bytes(b"nope")
    with pytest.raises(datasets.DataError, match="none of the 2 images .* could be read"):
        datasets.load(folder_cfg(tmp_path / "data", tmp_path, "data.bad_images=skip").data, "pretrain")


def test_an_empty_class_folder_is_refused_before_training(tmp_path):
    make_folder(tmp_path / "data", bad=False)
    (tmp_path / "data" / "train" / "empty_class").mkdir()
    run_dir = tmp_path / "run"
    with pytest.raises(datasets.DataError, match="class folder .*empty_class holds no images"):
        pretrain(folder_cfg(tmp_path / "data", tmp_path), run_dir)
    assert not checkpoint.list_checkpoints(run_dir)


def test_a_data_set_smaller_than_the_batch_is_refused_before_training(tmp_path):
    good, _ = make_folder(tmp_path / "data", bad=False)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError, match=f"has {len(good)} images, fewer than train.batch_size=64"):
        pretrain(folder_cfg(tmp_path / "data", tmp_path, "train.batch_size=64"), run_dir)
    assert not checkpoint.list_checkpoints(run_dir) and not (run_dir / "metrics.jsonl").exists()
