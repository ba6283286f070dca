"""The batched Gaussian blur against torchvision.transforms.v2's (issue 12: independent references).

Ours (sparsehead.data.views.gaussian_blur) blurs a whole batch at once with a per-image sigma:
a separable grouped convolution with the kernel exp(-t^2 / (2 sigma^2)) / sum, t = -K//2..K//2,
and reflect padding. torchvision's gaussian_blur builds the same normalised kernel (as a softmax
over a linspace scaled by 1/sqrt(2)), pads with reflect as well and convolves with the 2-D outer
product, one image and one sigma per call. Separable and 2-D agree up to rounding (reflect padding
is separable too), so no setting needs changing: the comparison is direct.

The kernel size is a choice of ours: odd, about 10% of the side, at least 3
(2 round(0.05 size) + 1: 23 for 224 as in BYOL, 5 for 32); torchvision has no rule (it takes
kernel_size as given), so the generator's size is passed to it. sigma ~ U(0.1, 2) per image as
torchvision's default GaussianBlur(sigma=(0.1, 2.0)).
"""

import pytest
import torch
from torchvision.transforms.v2 import GaussianBlur
from torchvision.transforms.v2 import functional as TF

from sparsehead import config
from sparsehead.data import views
from sparsehead.data.views import ViewGenerator, gaussian_blur


def _batch(n, size, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g, dtype=dtype)


@pytest.mark.parametrize("size,kernel", [(16, 3), (32, 5), (32, 9), (20, 7)])
def test_gaussian_blur_equals_torchvision_per_image(size, kernel):
    torch.set_num_threads(1)
    x = _batch(5, size, seed=size + kernel, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.7, 2.0], dtype=torch.float64)
    ours = gaussian_blur(x, sigma, kernel)
    for i in range(len(x)):
        ref = TF.gaussian_blur(x[i], kernel_size=[kernel, kernel], sigma=[sigma[i].item()] * 2)
        torch.testing.assert_close(ours[i], ref, rtol=1e-12, atol=1e-12)


def test_gaussian_blur_equals_torchvision_in_float32_and_the_transform_class():
    """float32 as in training (tolerance for the separable vs 2-D summation order), and the v2
    GaussianBlur class with sigma fixed to each image's value."""
    torch.set_num_threads(1)
    x = _batch(4, 32, seed=1)
    sigma = 0.1 + 1.9 * torch.rand(4, generator=torch.Generator().manual_seed(2))
    ours = gaussian_blur(x, sigma, 5)
    for i in range(len(x)):
        s = sigma[i].item()
        ref = GaussianBlur(kernel_size=5, sigma=(s, s))(x[i])
        torch.testing.assert_close(ours[i], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size,kernel", [(16, 3), (32, 5), (96, 11), (224, 23)])
def test_the_view_generator_blurs_as_torchvision(monkeypatch, size, kernel):
    """Inside the generator: blur the only op (p = 1, whole-image crop, mean 0 / std 1 so the
    normalisation is the identity); the blur's input, sigma and kernel size (one call for the two
    views) are recorded and each
    output image must be torchvision's blur of that input with them. Also pins the kernel-size
    rule. (The blur's input is the whole-image crop, equal to the image up to grid_sample's
    coordinate rounding, ~3e-5 at 224 in float32, hence the loose check on it.)"""
    torch.set_num_threads(1)
    calls = []

    def recording_blur(x, sigma, kernel_size):
        calls.append((x.clone(), sigma.clone(), kernel_size))
        return gaussian_blur(x, sigma, kernel_size)

    monkeypatch.setattr(views, "gaussian_blur", recording_blur)
    cfg = config.load(None, ["augment.ops=[blur]", "augment.blur_p=[1.0,1.0]"]).augment
    gen = ViewGenerator(cfg, size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    n = 3 if size < 100 else 2
    images = (_batch(n, size, seed=size) * 255).round().to(torch.uint8)
    v1, v2 = gen(images, torch.Generator().manual_seed(3))
    assert [k for _, _, k in calls] == [kernel]  # both views blurred in one call, view-major
    (x, sigma, _), *_ = calls
    for view, x, sigma in zip((v1, v2), x.chunk(2), sigma.chunk(2)):
        torch.testing.assert_close(x, images.float() / 255, rtol=0, atol=1e-4)
        assert torch.all((sigma >= 0.1) & (sigma <= 2.0))
        for i in range(n):
            ref = TF.gaussian_blur(x[i], kernel_size=[kernel, kernel], sigma=[sigma[i].item()] * 2)
            torch.testing.assert_close(view[i], ref, rtol=1e-5, atol=2e-6)
