"""The batched views draw what torchvision's per-image transforms draw, within sampling error.

Crop boxes are compared with RandomResizedCrop.get_params (two-sample KS tests on the area
fraction and the aspect ratio); flip, grayscale and jitter probabilities with binomial tests;
the brightness factor range with ColorJitter's own range; each jitter op with torchvision's
functional op on the same factor. Significance level 1e-3 per check, fixed seeds.
"""

import math

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from scipy import stats

from sparsehead import config
from sparsehead.data import colour as C
from sparsehead.data import views as V
from sparsehead.data.crops import sample_crops

ALPHA = 1e-3
N = 4000
N_CROPS = 10_000  # crop boxes are cheap to draw: more of them, a sharper KS test


def _generator(cfg_overrides=(), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), size=16):
    cfg = config.load(None, list(cfg_overrides)).augment
    return V.ViewGenerator(cfg, size, list(mean), list(std))


@pytest.mark.parametrize("height,width", [(32, 32), (24, 40)])
def test_crop_boxes_match_random_resized_crop(height, width):
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    ours = sample_crops(N_CROPS, height, width, scale, ratio, torch.Generator().manual_seed(0), "cpu")
    torch.manual_seed(0)
    img = torch.zeros(3, height, width)
    ref = torch.tensor(
        [T.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(N_CROPS)], dtype=torch.float64
    )  # (top, left, h, w)
    top, left, h, w = ours.double().unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    for name, a, b in [
        ("area fraction", h * w / (height * width), ref[:, 2] * ref[:, 3] / (height * width)),
        ("aspect ratio", w / h, ref[:, 3] / ref[:, 2]),
        ("top offset", top / (height - h + 1), ref[:, 0] / (height - ref[:, 2] + 1)),
    ]:
        p = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
        assert p > ALPHA, f"{name}: KS p = {p:.2g}"


def _colourful(n, size=16, seed=0):
    """uint8 images whose rows differ (a flip shows) and whose channels differ (grayscale shows)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _binomial_ok(count, n, p):
    return stats.binomtest(count, n, p).pvalue > ALPHA


def test_flip_probability_and_exact_mirror():
    images = _colourful(N // 4)
    views = _generator(["augment.crop_scale_min=1.0", "augment.jitter_p=0.0", "augment.grayscale_p=0.0"])
    x, _ = views(images, torch.Generator().manual_seed(1))
    src = images.float() / 255
    same = (x - src).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (x - src.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (same ^ mirrored).all(), "a full-size crop must be the image or its mirror image, exactly"
    assert _binomial_ok(int(mirrored.sum()), len(images), 0.5), int(mirrored.sum())


def test_grayscale_probability():
    images = _colourful(N // 4)
    views = _generator(["augment.jitter_p=0.0"])
    x, _ = views(images, torch.Generator().manual_seed(2))
    gray = (x[:, 0] == x[:, 1]).all(dim=(1, 2)) & (x[:, 1] == x[:, 2]).all(dim=(1, 2))
    assert _binomial_ok(int(gray.sum()), len(images), 0.2), int(gray.sum())
    # torchvision's luma weights
    torch.testing.assert_close(
        C.grayscale(images[:4].float() / 255), TF.rgb_to_grayscale(images[:4].float() / 255), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_brightness_factor_range_and_jitter_probability(strength):
    """On a flat gray image contrast, saturation and hue do nothing, so a view / the image is
    the brightness factor alone: 1 when jitter is skipped, else uniform on ColorJitter's range."""
    value = 64
    images = torch.full((N, 3, 4, 4), value, dtype=torch.uint8)
    views = _generator([f"augment.color_strength={strength}", "augment.grayscale_p=0.0"], size=4)
    x, _ = views(images, torch.Generator().manual_seed(3))
    factor = (x[:, 0, 0, 0] / (value / 255)).double()
    lo, hi = T.ColorJitter(brightness=0.8 * strength).brightness
    applied = (factor - 1).abs() > 1e-6
    assert _binomial_ok(int(applied.sum()), N, 0.8), int(applied.sum())
    f = factor[applied].numpy()
    assert f.min() >= lo - 1e-6 and f.max() <= hi + 1e-6
    p = stats.kstest(f, stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue
    assert p > ALPHA, f"brightness factor not uniform on [{lo}, {hi}]: KS p = {p:.2g}"


@pytest.mark.parametrize(
    "op,reference,factors",
    [
        (C.adjust_brightness, TF.adjust_brightness, (0.6, 1.0, 1.4)),
        (C.adjust_contrast, TF.adjust_contrast, (0.6, 1.0, 1.4)),
        (C.adjust_saturation, TF.adjust_saturation, (0.6, 1.0, 1.4)),
        (C.adjust_hue, TF.adjust_hue, (-0.1, 0.0, 0.07)),
    ],
)
def test_each_jitter_op_matches_torchvision(op, reference, factors):
    x = _colourful(len(factors), size=8, seed=4).float() / 255
    out = op(x.clone(), torch.tensor(factors))
    expected = torch.stack([reference(img, f) for img, f in zip(x, factors)])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_jitter_op_order_is_a_uniform_random_permutation(monkeypatch):
    """Each of the 4! orders about equally often (chi-square), as ColorJitter draws them."""
    orders = []
    original = V.color_jitter
    monkeypatch.setattr(V, "color_jitter", lambda x, f, order: (orders.append(order), original(x, f, order))[1])
    views = _generator(size=4)
    views(_colourful(N // 2, size=4, seed=5), torch.Generator().manual_seed(6))
    _, counts = torch.unique(torch.cat(orders), dim=0, return_counts=True)
    assert len(counts) == math.factorial(4)
    assert stats.chisquare(counts.numpy()).pvalue > ALPHA
