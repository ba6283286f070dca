"""data.decode=device on the CPU: the workers' payloads, the batch decode (the same pixels as the
in-memory sets' decoder), the views cut from full-size images of varied sizes (the in-memory views'
grid_sample, image by image; torchvision's box distribution), unreadable records, and a stream run
that trains past skipped files and resumes bitwise after a SIGKILL. tests/cuda/test_cuda_decode.py
runs the same path on a GPU (nvJPEG, the side stream)."""

from __future__ import annotations

import io
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_FOLDER, assert_same_training_state, make_imagefolder, run_cli
from sparsehead.data import device_decode
from sparsehead.data.crops import CROP_COLUMNS, RATIO, CropSpec, crops_from_uniforms, cut_whole, sample_crops
from sparsehead.data.decode import read_rgb
from sparsehead.data.errors import DataError
from sparsehead.data.image_batch import ImageBatch
from sparsehead.runs import checkpoint

CPU = torch.device("cpu")


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    img = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)], 2) + rng.normal(0, 20, (h, w, 3))
    return img.clip(0, 255).astype(np.uint8)


def _encoded(h: int, w: int, seed: int, mode: str = "RGB", fmt: str = "JPEG", **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_photo(h, w, seed)).convert(mode).save(buffer, fmt, **save)
    return buffer.getvalue()


def image_at(batch: ImageBatch, k: int) -> torch.Tensor:
    """Image k of the batch, read back from its flat buffer by its layout alone."""
    offset, sc, sy, sx = batch.layout[k].tolist()
    h, w = (int(v) for v in batch.sizes[k].tolist())
    return batch.flat.as_strided((3, h, w), (sc, sy, sx), offset)


RECORDS = {  # the kinds a user's ImageNet holds: each payload's rank says who decodes it
    "baseline 4:2:0": (_encoded(37, 50, 0, quality=90), 1),
    "progressive 4:4:4": (_encoded(41, 29, 1, quality=85, subsampling=0, progressive=True), 1),
    "grayscale": (_encoded(30, 33, 2, mode="L"), 3),
    "cmyk": (_encoded(25, 40, 3, mode="CMYK"), 3),
    "png in disguise": (_encoded(20, 31, 4, fmt="PNG"), 3),
}


def test_device_decoded_pixels_equal_the_in_memory_decoder():
    """JPEGs the device decodes and the records the workers decode: every image equals decode.read_rgb's
    (on the CPU both are libjpeg-turbo with the same IDCT and upsampling: equal to the bit)."""
    names = list(RECORDS)
    payloads = [device_decode.payload(raw, name) for name, (raw, _) in RECORDS.items()]
    assert [p.dim() for p in payloads] == [rank for _, rank in RECORDS.values()]
    batch = device_decode.decode_batch(payloads, CPU, names.__getitem__)
    assert len(batch) == len(RECORDS) and batch.flat.dtype == torch.uint8
    for k, (raw, _) in enumerate(RECORDS.values()):
        assert torch.equal(image_at(batch, k), read_rgb(raw)), names[k]


def _mixed_batch() -> tuple[ImageBatch, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    sizes = [(37, 50), (64, 20), (9, 90), (40, 40), (300, 17)]  # (9, 90), (300, 17): no try fits, the fallback box
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]
    images[1] = images[1].permute(1, 2, 0).contiguous().permute(2, 0, 1)  # HWC memory, as libjpeg's
    images[3] = torch.randint(0, 256, (3, 50, 60), dtype=torch.uint8, generator=g)[:, 5:45, 10:50]  # neither: copied
    return ImageBatch.of(images, CPU), images


@pytest.mark.parametrize("spec", [CropSpec(16, (0.08, 1.0), 0.5), CropSpec(7, (0.05, 0.4), 0.5)])
def test_views_cut_from_full_size_images_equal_the_in_memory_views_image_by_image(spec):
    """Each view of each image equals crops.cut_whole (affine_grid + grid_sample) of that image alone
    from the same uniforms: the crop's box by the same rule on the image's own size, the same bilinear
    sampling and border; float32 rounding of the sample positions apart."""
    batch, images = _mixed_batch()
    u = torch.rand(3, len(images), CROP_COLUMNS, generator=torch.Generator().manual_seed(1))
    views = batch.cut(range(3), spec, u).view(3, len(images), 3, spec.size, spec.size)
    for k, img in enumerate(images):
        one = cut_whole(img[None].float().div(255), spec, u[:, k : k + 1])
        torch.testing.assert_close(views[:, k], one, rtol=0, atol=2e-5)
        h, w = img.shape[1:]
        per_image = crops_from_uniforms(spec, u[:, k : k + 1], torch.tensor([h * 1.0]), torch.tensor([w * 1.0]))
        fixed = crops_from_uniforms(spec, u[:, k : k + 1], h, w)
        assert all(torch.equal(a, b) for a, b in zip(per_image, fixed))  # the in-memory views' boxes, bit for bit


def _ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic."""
    grid = torch.cat([a, b]).sort().values
    cdf = [torch.searchsorted(x.sort().values, grid, right=True) / len(x) for x in (a, b)]
    return float((cdf[0] - cdf[1]).abs().max())


def test_crop_boxes_of_a_mixed_batch_follow_the_workers_distribution():
    """Boxes drawn for images of three sizes in one batch, against the workers' sampler (crops.sample_crops,
    torchvision's rule) on each size: the relative area and the aspect ratio, two-sample KS at 0.1%."""
    spec, n = CropSpec(224, (0.08, 1.0), 0.5), 3000
    sizes = torch.tensor([[375.0, 500.0], [500.0, 333.0], [240.0, 1000.0]]).repeat_interleave(n, 0)
    u = torch.rand(1, len(sizes), CROP_COLUMNS, generator=torch.Generator().manual_seed(2))
    boxes = crops_from_uniforms(spec, u, sizes[:, 0], sizes[:, 1])[0][0]
    g = torch.Generator().manual_seed(3)
    for s in range(3):
        h, w = (int(v) for v in sizes[s * n])
        mine, theirs = boxes[s * n : (s + 1) * n], sample_crops(n, h, w, spec.scale, RATIO, g, "cpu")
        for stat in (lambda b: b[:, 2] * b[:, 3] / (h * w), lambda b: b[:, 3] / b[:, 2]):
            assert _ks(stat(mine), stat(theirs)) < 1.95 * (2 / n) ** 0.5  # alpha 0.001
        assert (mine[:, 0] + mine[:, 2] <= h).all() and (mine[:, 1] + mine[:, 3] <= w).all()


def test_unreadable_records_stop_with_their_name(tmp_path):
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    with pytest.raises(DataError, match="cannot read image .*text.jpg.*data.bad_images=skip"):
        device_decode.payload(str(text), str(text))
    good = _encoded(40, 50, 0)
    truncated = good[: len(good) // 2]  # its header reads: the workers hand it over, the decode refuses it
    payloads = [device_decode.payload(raw, "") for raw in (good, truncated)]
    with pytest.raises(DataError, match="cannot read image half.jpg"):
        device_decode.decode_batch(payloads, CPU, ["whole.jpg", "half.jpg"].__getitem__)


RUN = [*TINY_FOLDER, "data.storage=stream", "data.decode=device", "train.epochs=3", "train.checkpoint_every=2"]


def test_device_decode_stream_run_resumes_bitwise_after_sigkill(tmp_path):
    make_imagefolder(tmp_path / "d", per_class=8)  # 16 images: 2 steps an epoch, 6 in all
    args = RUN + ["data.workers=0", f"data.root={tmp_path / 'd'}"]
    env = {"OMP_NUM_THREADS": "1"}
    ref = run_cli("pretrain", *args, "--run-dir", str(tmp_path / "ref"), env=env)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = run_cli(
        "pretrain", *args, "--run-dir", str(tmp_path / "run"), env={**env, "SPARSEHEAD_TEST_SIGKILL": "step:3"}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    done = run_cli("pretrain", "--resume", str(tmp_path / "run"), env=env)
    assert done.returncode == 0 and "resuming" in done.stderr, done.stderr[-2000:]
    a, b = (checkpoint.load(checkpoint.find(tmp_path / r)) for r in ("ref", "run"))
    assert_same_training_state(a, b, 6)


def test_device_decode_run_reads_bytes_in_a_worker_and_trains_past_skipped_files(tmp_path):
    from sparsehead import config
    from sparsehead.training.loop import pretrain

    make_imagefolder(tmp_path / "d", per_class=8)
    (tmp_path / "d" / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (tmp_path / "d" / "train" / "dog" / "cmyk.JPEG").write_bytes(_encoded(30, 40, 5, mode="CMYK"))
    (tmp_path / "d" / "train" / "dog" / "png.JPEG").write_bytes(_encoded(30, 40, 6, fmt="PNG"))
    args = RUN + [f"data.root={tmp_path / 'd'}", "data.workers=1", "data.bad_images=skip", "train.max_steps=2"]
    cfg = config.load(None, args + [f"train.out_dir={tmp_path}", "train.run_name=skip"])
    with pytest.warns(UserWarning, match="unreadable"):
        result = pretrain(cfg)
    assert checkpoint.load(checkpoint.find(result["run_dir"]))["step"] == 2
