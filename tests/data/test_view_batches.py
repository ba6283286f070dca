"""One batch for every storage: the memory and the stream feed of the same files yield batches the
views take as they come (crops.ViewSource), the same views in the same order; whole images are cut
at the boxes and flips of the one draw of uniforms, view by view (checked against bilinear sampling
written here); pre-cut views are only coloured and normalised."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from conftest import make_imagefolder
from sparsehead import config
from sparsehead.data import datasets
from sparsehead.data.crops import CROP_COLUMNS, CutViews, WholeImages, crops_from_uniforms
from sparsehead.data.feed import open_feed
from sparsehead.data.views import VIEW_COLUMNS, ViewGenerator

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _views(*overrides):
    return ViewGenerator(config.load(None, list(overrides)).augment, 16, MEAN, STD)


def _normalised(x):
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_memory_and_stream_feeds_give_the_views_one_kind_of_batch(tmp_path):
    make_imagefolder(tmp_path, per_class=4)
    overrides = [f"data.root={tmp_path}", "data.source=imagefolder", "data.cache_dir=null", "data.image_size=16"]
    cfg = config.load(None, overrides + ["method.name=swav", "augment.global_crops=3", "augment.local_crops=2"])
    views = ViewGenerator(cfg.augment, 16, MEAN, STD)
    out = {}
    for storage in ("memory", "stream"):
        data = datasets.load(dataclasses.replace(cfg.data, storage=storage), "pretrain")
        sampler = DistributedSampler(range(len(data)), num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)
        feed = open_feed(data, sampler, 4, views.plan, 0, 0, torch.device("cpu"))
        batch, labels = next(iter(feed.epoch(0, 0)))
        crops = views(batch.to(torch.device("cpu"), non_blocking=True), torch.Generator().manual_seed(0))
        out[storage] = type(batch), labels.tolist(), [tuple(c.shape) for c in crops]
    assert out["memory"][0] is WholeImages and out["stream"][0] is CutViews
    assert out["memory"][1:] == out["stream"][1:]  # the same images, and views of the same sizes in order
    assert out["memory"][2] == [(4, 3, 16, 16)] * 3 + [(4, 3, 7, 7)] * 2


def test_pre_cut_views_are_only_coloured_and_normalised():
    g = torch.Generator().manual_seed(0)
    crops = tuple(torch.randint(0, 256, (5, 3, s, s), generator=g, dtype=torch.uint8) for s in (16, 16, 7))
    views = _views("augment.ops=[]", "method.name=swav", "augment.local_crops=1")  # no colour op
    out = views(CutViews(crops), torch.Generator().manual_seed(1))
    assert len(out) == 3
    for view, crop in zip(out, crops):
        torch.testing.assert_close(view, _normalised(crop.float() / 255), rtol=0, atol=1e-6)


def _resized_crop(image: np.ndarray, box, size: int, flip: bool) -> np.ndarray:
    """Bilinear samples of (C, H, W) `image` at the centres of a size x size grid over `box` (top,
    left, h, w), each coordinate clamped to the image, the columns mirrored where `flip`."""
    top, left, h, w = box
    t = (np.arange(size) + 0.5) / size
    ys = np.clip(top + t * h - 0.5, 0, image.shape[1] - 1)
    xs = np.clip(left + t * w - 0.5, 0, image.shape[2] - 1)[:: -1 if flip else 1]
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, image.shape[1] - 1), np.minimum(x0 + 1, image.shape[2] - 1)
    wy, wx = (ys - y0)[:, None], xs - x0
    rows = [(1 - wx) * image[:, y][:, :, x0] + wx * image[:, y][:, :, x1] for y in (y0, y1)]
    return (1 - wy) * rows[0] + wy * rows[1]


@pytest.mark.parametrize("pass_tensor", [False, True])
def test_whole_images_are_cut_at_the_sampler_draws_view_by_view(pass_tensor):
    """Crop and flip only: view k is each image's box k resized (bilinear) and flipped where drawn, the
    boxes and flips of each view from its row of the call's one draw of uniforms from the views'
    generator; a plain uint8 tensor is taken as whole images."""
    images = torch.randint(0, 256, (6, 3, 24, 20), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    views = _views("augment.ops=[crop,flip]", "method.name=swav", "augment.local_crops=2", "augment.local_size=8")
    out = views(images if pass_tensor else WholeImages(images), torch.Generator().manual_seed(3))
    u = torch.rand(4, 6, VIEW_COLUMNS, generator=torch.Generator().manual_seed(3))  # the call's one draw
    x = images.double().numpy() / 255
    assert [v.shape[-1] for v in out] == [16, 16, 8, 8]
    flipped = 0
    for view, spec, u_view in zip(out, views.plan, u):
        boxes, flips = crops_from_uniforms(spec, u_view[:, :CROP_COLUMNS], 24, 20)
        for i, (box, flip) in enumerate(zip(boxes.tolist(), flips.tolist())):
            ref = torch.from_numpy(_resized_crop(x[i], box, spec.size, flip)).float()
            torch.testing.assert_close(view[i], _normalised(ref[None])[0], rtol=0, atol=1e-4)
            flipped += flip
    assert 0 < flipped < 24  # both kinds checked
