"""Method.encode_crops: the crops of one size go through the backbone as one batch (SwAV's and DINO's
code). BatchNorm statistics then span all the crops of a size (checked against a numpy computation),
the backbone runs once per resolution, and a backbone without BatchNorm (a timm ViT) gives the
outputs of the per-crop loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import TINY
from sparsehead import config
from sparsehead.methods.base import Method
from sparsehead.runs.model import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


class NormThenPool(nn.Module):
    """r = the per-image channel means of BatchNorm(x): what BatchNorm's batch statistics were shows in r."""

    feature_dim = 3

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(3, affine=False)

    def forward(self, x):
        return self.norm(x).mean(dim=(2, 3))


def views(sizes, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, s, s, generator=g, dtype=torch.float64) for s in sizes]


def test_batchnorm_statistics_span_all_crops_of_one_size():
    crops = views([8, 8, 4, 4, 4])
    rs = Method(NormThenPool().double()).train().encode_crops(crops)
    for size in (8, 4):
        same = [x.numpy() for x in crops if x.shape[-1] == size]
        stacked = np.concatenate(same)  # every crop of this size
        mean = stacked.mean(axis=(0, 2, 3), keepdims=True)
        var = stacked.var(axis=(0, 2, 3), keepdims=True)  # biased, as BatchNorm normalises
        expected = [((x - mean) / np.sqrt(var + 1e-5)).mean(axis=(2, 3)) for x in same]
        got = [r.detach().numpy() for r, x in zip(rs, crops) if x.shape[-1] == size]
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # The test can fail: per-crop statistics (the loop before) differ.
    alone = Method(NormThenPool().double()).train().backbone(crops[0])
    assert not torch.allclose(alone, rs[0])


@pytest.mark.parametrize("name", ["swav", "simclr"])
def test_one_backbone_forward_per_resolution(name):
    cfg = config.load(
        None, TINY + [f"method.name={name}", "augment.global_crops=3", "augment.local_crops=4", "augment.local_size=8"]
    )
    method = build_model(cfg).double()
    batches = []
    method.backbone.register_forward_hook(lambda module, args, out: batches.append(tuple(args[0].shape)))
    method(*views([16] * 3 + [8] * 4))
    assert batches == [(12, 3, 16, 16), (16, 3, 8, 8)]


def per_crop(method):
    """The method with the backbone run crop by crop, the loop before batching by resolution."""
    method.encode_crops = lambda crops: [method.backbone(x) for x in crops]
    return method


@pytest.mark.parametrize("name", ["swav", "simclr"])
def test_without_batchnorm_batched_equals_the_per_crop_loop(name):
    pytest.importorskip("timm", reason="timm is in the test extra: pip install -e '.[test]'")
    vit = [
        "model.backbone=timm:vit_tiny_patch16_224",
        "model.timm_args.patch_size=4",
        "model.timm_args.depth=1",
        "model.timm_args.embed_dim=32",
        "model.timm_args.num_heads=2",
        "model.timm_args.dynamic_img_size=true",  # the local crops' 2 x 2 patches
    ]
    cfg = config.load(None, TINY + vit + [f"method.name={name}", "augment.local_crops=4", "augment.local_size=8"])
    torch.manual_seed(0)
    batched = build_model(cfg).double()
    looped = per_crop(build_model(cfg).double())
    looped.load_state_dict(batched.state_dict())
    crops = views([16] * 2 + [8] * 4, n=6)
    rs, rs_loop = batched.encode_crops(crops), looped.encode_crops(crops)
    for a, b in zip(rs, rs_loop):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    out, out_loop = batched(*crops), looped(*crops)
    torch.testing.assert_close(out.loss, out_loop.loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.r, out_loop.r, rtol=1e-10, atol=1e-12)
