"""Augmentation recipes and Huang et al. 2023's op compositions: two different valid views, and each op
does what its name says (checked against direct numpy computations on synthetic colour images)."""

import numpy as np
import pytest
import torch

from sparsehead import config
from sparsehead.data.views import ViewGenerator

N, S = 32, 16
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
HUANG_ROWS = [
    ["crop", "blur", "color_drop", "color_distort", "flip"],
    ["crop", "blur", "color_drop", "color_distort"],
    ["crop", "blur", "color_drop"],
    ["crop", "blur"],
    ["crop"],
]


def _images(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (N, 3, S, S), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _views(overrides, images=None, seed=0):
    cfg = config.load(None, ["augment.blur_p=[0.5,0.5]", *overrides])  # blur on, so it can be listed
    gen = ViewGenerator(cfg.augment, S, MEAN, STD)
    v1, v2 = gen(_images() if images is None else images, torch.Generator().manual_seed(seed))

    def unnorm(v):
        return (v * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)).numpy()

    return v1, v2, unnorm(v1), unnorm(v2)


def _ops(ops):
    return "augment.ops=[" + ",".join(ops) + "]"


@pytest.mark.parametrize(
    "overrides",
    [
        ["augment.recipe=simclr"],
        ["augment.recipe=byol"],
        *[[_ops(row)] for row in HUANG_ROWS],
        [_ops(["crop", "color_distort"])],
        *[[_ops([op])] for op in ["blur", "color_drop", "color_distort", "flip"]],
    ],
)
def test_two_different_views_of_the_right_shape_dtype_and_range(overrides):
    v1, v2, u1, u2 = _views(overrides)
    assert v1.shape == v2.shape == (N, 3, S, S) and v1.dtype == v2.dtype == torch.float32
    assert np.isfinite(u1).all() and np.isfinite(u2).all()
    assert u1.min() >= -1e-5 and u1.max() <= 1 + 1e-5 and u2.min() >= -1e-5 and u2.max() <= 1 + 1e-5
    assert not torch.allclose(v1, v2)


def test_recipe_none_and_no_ops_give_the_image_itself():
    x = _images().float().numpy() / 255
    for overrides in (["augment.recipe=none"], ["augment.ops=[]"]):
        _, _, u1, u2 = _views(overrides)
        np.testing.assert_allclose(u1, x, atol=1e-5)
        np.testing.assert_allclose(u2, x, atol=1e-5)


def test_color_drop_only_gives_the_grayscale_image():
    x = _images().double().numpy() / 255
    gray = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    _, _, u1, _ = _views([_ops(["color_drop"]), "augment.grayscale_p=1.0"])
    for c in range(3):
        np.testing.assert_allclose(u1[:, c], gray, atol=1e-5)


def test_flip_only_mirrors_or_keeps_each_image():
    x = _images().float().numpy() / 255
    _, _, u1, _ = _views([_ops(["flip"])])
    mirrored = [np.allclose(u1[i], x[i, :, :, ::-1], atol=1e-5) for i in range(N)]
    same = [np.allclose(u1[i], x[i], atol=1e-5) for i in range(N)]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)


def test_crop_only_changes_geometry_not_colour():
    colours = torch.randint(0, 256, (N, 3, 1, 1), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    flat = colours.expand(N, 3, S, S).contiguous()
    _, _, u1, _ = _views([_ops(["crop"])], images=flat)
    np.testing.assert_allclose(u1, flat.float().numpy() / 255, atol=1e-5)  # a flat image stays its colour
    _, _, u1, _ = _views([_ops(["crop"])])
    assert np.abs(u1 - _images().float().numpy() / 255).mean() > 0.05  # but its pixels move


def test_colour_ops_act_per_pixel():
    """color_distort only: pixels equal in the input stay equal in the output (no geometry change),
    while the colours change."""
    halves = torch.randint(0, 256, (N, 3, 1, 2), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    x = halves.repeat_interleave(S // 2, dim=3).expand(N, 3, S, S).contiguous()  # left colour | right colour
    _, _, u1, _ = _views([_ops(["color_distort"]), "augment.jitter_p=1.0"], images=x)
    left, right = u1[..., : S // 2], u1[..., S // 2 :]
    np.testing.assert_allclose(left, left[..., :1, :1] + 0 * left, atol=1e-5)
    np.testing.assert_allclose(right, right[..., :1, :1] + 0 * right, atol=1e-5)
    assert np.abs(u1 - x.float().numpy() / 255).mean() > 0.02


def test_blur_only_smooths_and_keeps_colour_of_flat_images():
    x = _images().float().numpy() / 255
    _, _, u1, _ = _views([_ops(["blur"]), "augment.blur_p=[1.0,1.0]"])

    def tv(a):
        return np.abs(np.diff(a, axis=-1)).mean() + np.abs(np.diff(a, axis=-2)).mean()

    assert tv(u1) < 0.8 * tv(x)
    np.testing.assert_allclose(u1.mean(axis=(2, 3)), x.mean(axis=(2, 3)), atol=0.02)


def test_solarize_only_inverts_bright_pixels():
    x = _images().double().numpy() / 255
    _, _, u1, _ = _views([_ops(["solarize"]), "augment.solarize_p=[1.0,0.0]"])
    np.testing.assert_allclose(u1, np.where(x >= 0.5, 1 - x, x), atol=1e-5)


def test_colour_strength_orders_the_colour_change():
    x = _images().float().numpy() / 255
    change = []
    for s in (1, 0.5, 0.25, 0.125):  # Huang et al. 2023's strengths
        _, _, u1, _ = _views([_ops(["color_distort"]), "augment.jitter_p=1.0", f"augment.color_strength={s}"])
        change.append(np.abs(u1 - x).mean())
    assert change == sorted(change, reverse=True) and change[-1] > 0


def test_listing_a_switched_off_op_is_a_config_error():
    with pytest.raises(config.ConfigError, match=r"augment\.ops.*blur.*augment\.blur_p"):
        config.load(None, ["augment.ops=[crop,blur]"])
    with pytest.raises(config.ConfigError, match=r"augment\.ops.*flip"):
        config.load(None, ["augment.recipe=none", "augment.ops=[flip]"])
    with pytest.raises(config.ConfigError, match="augment.ops"):
        config.load(None, ["augment.ops=[rotate]"])
