"""The views' per-batch path is free of host-device syncs, and its masked colour jitter is the
per-image ColorJitter it replaces.

color_jitter acts on the whole batch with per-image masks (hue once, three masked blend steps on
each side of it) instead of sub-batches picked by nonzero(), which on a GPU makes the CPU wait for
the GPU at every call. Syncs cannot be counted on a CPU (tests/cuda/test_cuda.py counts them on a
GPU), so here: no call that syncs on a GPU (nonzero, a boolean-mask index, .item(), bool() of a
tensor, .tolist()) is made while the views are drawn; and the jitter equals, image by image, the
four ops applied one image at a time in that image's own order, with our single-image functions
(bitwise: the same float operations in the same order on the same values) and with torchvision's
(to 1e-5 as each op alone in test_views_distribution.py, ~1e-6 seen: torchvision's blends and
HSV conversion round differently).
"""

import itertools

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torchvision.transforms.v2 import functional as TF

from sparsehead import config
from sparsehead.data import colour as C
from sparsehead.data import views as V
from sparsehead.data.crops import CutViews

ORDERS = torch.tensor(list(itertools.permutations(range(4))))  # all 24 op orders


def _batch(repeats=2, size=8, seed=0):
    """Each of the 24 orders `repeats` times, factors from ColorJitter's widest SimCLR ranges
    (strength 1: brightness, contrast, saturation in [0.2, 1.8], hue in [-0.2, 0.2]), uint8-valued
    images with gray, black and white pixels (the HSV edge cases) besides random colours."""
    g = torch.Generator().manual_seed(seed)
    n = len(ORDERS) * repeats
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8).float() / 255
    x[:, :, 0] = x[:, :1, 0]  # a gray row
    x[:, :, 1, :2] = 0.0
    x[:, :, 1, 2:4] = 1.0
    u = torch.rand(n, 4, generator=g)
    factors = torch.cat([0.2 + 1.6 * u[:, :3], 0.2 * (2 * u[:, 3:] - 1)], dim=1)
    order = ORDERS.repeat(repeats, 1)[torch.randperm(n, generator=g)]
    return x, factors, order


def _per_image(x, factors, order, ops):
    out = []
    for i in range(len(x)):
        img = x[i : i + 1]
        for op in order[i].tolist():
            img = ops[op](img, factors[i : i + 1, op])
        out.append(img)
    return torch.cat(out)


def test_jitter_equals_the_ops_applied_one_image_at_a_time_in_its_order():
    x, factors, order = _batch()
    ours = C.color_jitter(x, factors, order)
    ref = _per_image(x, factors, order, C.COLOR_OPS)
    assert torch.equal(ours, ref), (ours - ref).abs().max()
    assert not torch.equal(ours, x)
    tv_ops = [
        lambda img, f, op=op: op(img, f.item())
        for op in (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    ]
    torch.testing.assert_close(ours, _per_image(x, factors, order, tv_ops), rtol=0, atol=1e-5)


def test_jitter_on_cpu_chunks_equals_the_whole_batch(monkeypatch):
    """The CPU path cuts the batch into cache-sized slices (here 5, 5, ..., 3 images): the same values."""
    x, factors, order = _batch(repeats=2, size=8, seed=1)
    whole = C.color_jitter(x, factors, order)
    monkeypatch.setattr(C, "CPU_CHUNK_VALUES", 5 * x[0].numel() + 7)
    assert torch.equal(C.color_jitter(x, factors, order), whole)


class _SyncingCallError(TorchFunctionMode):
    """Raises at every torch call that makes the host wait for a GPU's result (on any device)."""

    SYNCING = {
        "nonzero",
        "argwhere",
        "item",
        "tolist",
        "__bool__",
        "__int__",
        "__float__",
        "masked_select",
        "unique",
        "unique_consecutive",
        "repeat_interleave",
    }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.SYNCING and not (name == "repeat_interleave" and isinstance(args[1], int)):
            raise AssertionError(f"a syncing call in the views: {name}")
        if name in ("__getitem__", "__setitem__"):
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                raise AssertionError(f"a boolean-mask index in the views: {name}")
        return func(*args, **(kwargs or {}))


def _draw(overrides, images):
    cfg = config.load(None, list(overrides)).augment
    views = V.ViewGenerator(cfg, 16, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    views.normalize(torch.zeros(1, 3, 1, 1))  # the one-off move of mean/std to the batch's device
    return views(images, torch.Generator().manual_seed(0))


CASES = [
    ["augment.recipe=simclr"],
    ["augment.recipe=byol"],
    ["augment.blur_p=[0.5,0.5]", "augment.solarize_p=[0.2,0.2]", "augment.jitter_p=0.5"],
    ["augment.local_crops=2", "augment.blur_p=[0.3,0.3]"],
]


@pytest.mark.parametrize("overrides", CASES)
def test_views_call_no_nonzero(monkeypatch, overrides):
    def refuse(*_, **__):
        raise AssertionError("nonzero() in the views: a host-device sync per call on a GPU")

    images = torch.randint(0, 256, (12, 3, 20, 20), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    monkeypatch.setattr(torch, "nonzero", refuse)
    monkeypatch.setattr(torch.Tensor, "nonzero", refuse)
    _draw(overrides, images)


@pytest.mark.parametrize("overrides", CASES + [["augment.local_crops=2", "stream"]])
def test_views_make_no_syncing_call(overrides):
    """Wider than nonzero: no .item(), bool(tensor), .tolist(), boolean-mask index etc. either
    (torch's own Python-level calls; "stream": batches of views pre-cut by the workers)."""
    g = torch.Generator().manual_seed(2)
    if "stream" in overrides:
        sizes = (16, 16, 7, 7)
        images = CutViews(tuple(torch.randint(0, 256, (12, 3, s, s), generator=g, dtype=torch.uint8) for s in sizes))
    else:
        images = torch.randint(0, 256, (12, 3, 20, 20), generator=g, dtype=torch.uint8)
    with _SyncingCallError():
        _draw([o for o in overrides if o != "stream"], images)
    with pytest.raises(AssertionError, match="syncing call"), _SyncingCallError():
        torch.rand(3).nonzero()  # the guard itself works
