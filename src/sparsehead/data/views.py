"""Batched augmentation on the training device, one random draw per image.

The ops follow torchvision's per-image transforms (RandomResizedCrop, RandomHorizontalFlip,
ColorJitter with a random op order, RandomGrayscale, GaussianBlur, RandomSolarize) but act on
a whole batch at once: crop + flip + resize are one `grid_sample` (crops.py, which hands each view
its crop whatever the storage), blur is one grouped convolution. Every op acts on the whole batch,
with per-image factors and masks (torch.where) choosing what each image gets: never on a sub-batch
picked by nonzero() or a boolean index, whose size the host would have to wait for (a host-device
sync per call on a GPU).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from sparsehead.data.augment import AugmentConfig, resolve_recipe
from sparsehead.data.crops import ViewSource, WholeImages, crop_plan, cut_whole

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def grayscale(x: torch.Tensor) -> torch.Tensor:
    # Python-float weights: a weight tensor made on the GPU at each call is a host-to-device copy (a sync).
    (wr, wg, wb), (r, g, b) = GRAY_WEIGHTS, x.unbind(1)
    return (wr * r + wg * g + wb * b).unsqueeze(1)


# ---------------------------------------------------------------------------------------------
# Colour


def adjust_brightness(x, f):
    return (x * f.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x, f):
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def adjust_saturation(x, f):
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * grayscale(x)).clamp_(0, 1)


def adjust_hue(x, shift):
    """Rotate the hue by `shift` (fraction of a turn) per image, via HSV as torchvision does.
    (Plane-wise maxima and a where-chain pick of the six HSV -> RGB cases: the same arithmetic as a
    stack-and-gather, several times faster on CPUs.)"""
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    v = maxc
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), 0.0)
    safe = torch.where(delta > 0, delta, 1.0)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    h = (h + shift.view(-1, 1, 1)) % 1.0
    # HSV -> RGB: sector i (6 is 0 again: h may round up to 1) picks each channel among v, p, q, t.
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i0, i1, i2, i3, i4, i5 = (i == 0) | (i == 6), i == 1, i == 2, i == 3, i == 4, i == 5
    red = torch.where(i1, q, torch.where(i2 | i3, p, torch.where(i4, t, v)))  # v q p p t v
    green = torch.where(i0, t, torch.where(i1 | i2, v, torch.where(i3, q, p)))  # t v v q p p
    blue = torch.where(i0 | i1, p, torch.where(i2, t, torch.where(i5, q, v)))  # p p t v v q
    return torch.stack([red, green, blue], dim=1)


COLOR_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # op indices: columns of `factors`, values of `order`


def _blend(x, factors, op, active):
    """Brightness, contrast or saturation, `op` (n,) per image, where `active` (n,): each is
    clamp(a x + b ref, 0, 1) with a = f and, as in adjust_* above (same operations, same order),
    b = 0 for brightness, b = 1 - f and ref = the image's grayscale mean for contrast, its
    grayscale image for saturation. Inactive images (and hue) get f = 1 and no ref term: values
    in [0, 1] (all the views hold, and each op keeps them there) come out unchanged, bit for bit."""
    column = op.clamp(max=SATURATION)[:, None]
    f = factors.gather(1, column).squeeze(1)
    active = active & (op != HUE)
    a = torch.where(active, f, 1.0).view(-1, 1, 1, 1)
    b = torch.where(active & (op != BRIGHTNESS), 1 - f, 0.0).view(-1, 1, 1, 1)
    gray = grayscale(x)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    ref = torch.where((op == SATURATION).view(-1, 1, 1, 1), gray, mean)
    return (a * x).add_(b * ref).clamp_(0, 1)  # in place: one full-size buffer


# On CPUs the jitter runs on chunks of the batch of about this many values per image tensor (1 MiB
# of float32), so that its temporaries stay in the cache: about 2x faster at 224 px and 1.2x at
# 32 px than the whole batch at once (2-core Xeon, one thread). Chunks are fixed slices of a known
# size: no sync (and on GPUs one chunk).
CPU_CHUNK_VALUES = 2**18


def color_jitter(x, factors, order):
    """Apply the four jitter ops per image in that image's own random `order` (n, 4), to the whole
    batch at once with no host sync: hue, the costly op, runs once on the whole batch; each image's
    ops ordered before its hue are applied in three masked blend steps before it (positions 0-2,
    where the position precedes the image's hue), those after it in three steps after it
    (positions 1-3). Each image thus gets exactly its own ops in its own order."""
    n = x.shape[0]
    step = n if x.device.type != "cpu" else max(1, CPU_CHUNK_VALUES // max(1, math.prod(x.shape[1:])))
    if step >= n:
        return _color_jitter(x, factors, order)
    return torch.cat(
        [_color_jitter(x[i : i + step], factors[i : i + step], order[i : i + step]) for i in range(0, n, step)]
    )


def _color_jitter(x, factors, order):
    hue_at = (order == HUE).long().argmax(dim=1)  # each image's position of the hue
    for position in range(3):
        x = _blend(x, factors, order[:, position], hue_at > position)
    x = adjust_hue(x, factors[:, HUE])
    for position in range(1, 4):
        x = _blend(x, factors, order[:, position], hue_at < position)
    return x


def gaussian_blur(x, sigma, kernel_size):
    """Per-image Gaussian blur with standard deviations `sigma` (n,), separable, reflect padding."""
    n, c, h, w = x.shape
    half = kernel_size // 2
    t = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n*c, K)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (half, half, 0, 0), mode="reflect"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, half, half), mode="reflect"), k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


# ---------------------------------------------------------------------------------------------


class ViewGenerator:
    """Makes the augmented, normalised views of a batch on its own device: augment.global_crops global
    views (2 unless multi-crop), then augment.local_crops local crops, each drawn in that order."""

    def __init__(
        self,
        cfg: AugmentConfig,
        image_size: int,
        mean,
        std,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        self.cfg = resolve_recipe(cfg)
        self.size = image_size
        self.plan = crop_plan(self.cfg, image_size)  # the views' geometry, global views first
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.memory_format = memory_format

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.device != x.device:  # moved once, not at every batch (each copy would be a host sync)
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation input: uint8 -> float, resized to the training size, normalised."""
        x = images.float().div_(255)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return self.normalize(x)

    def __call__(
        self, images: torch.Tensor | ViewSource, generator: Optional[torch.Generator] = None, multi_crop: bool = True
    ) -> list[torch.Tensor]:
        """[global views..., local crops...] of a batch: a ViewSource, or uint8 (n, C, H, W) whole images
        (multi_crop=False: the first two global views, the pair of the two-view recipe). Each view is cut
        first (crops.py: its boxes and flips drawn now for whole images), then coloured, in order."""
        source = WholeImages(images) if isinstance(images, torch.Tensor) else images
        plan = self.plan if multi_crop else self.plan[:2]
        # The third and later views (global or local) take view 2's blur and solarisation probabilities.
        return [self.colour(source.cut(k, spec, generator), min(k, 1), generator) for k, spec in enumerate(plan)]

    def view(self, x: torch.Tensor, index: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        """One augmented global view of float whole images x in [0, 1]; `index` picks the per-view probabilities."""
        return self.colour(cut_whole(x, self.plan[index], generator), index, generator)

    def colour(self, x: torch.Tensor, index: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        """The colour, blur and solarisation of one view's float crops x in [0, 1], normalised;
        `index` picks the per-view probabilities."""
        cfg, n, dev, size = self.cfg, x.shape[0], x.device, x.shape[-1]

        def rand(*shape):
            return torch.rand(*shape, generator=generator, device=dev)

        if cfg.jitter_p > 0 and cfg.color_strength > 0:
            s = cfg.color_strength
            strength, lo = 0.8 * s, max(1 - 0.8 * s, 0.0)  # Python floats: no tensor copied to the device
            u = rand(n, 4)
            factors = torch.cat(
                [lo + (1 + strength - lo) * u[:, :3], (0.2 * s) * (2 * u[:, 3:] - 1)], dim=1
            )  # hue in [-0.2s, 0.2s]
            apply = rand(n) < cfg.jitter_p
            order = torch.argsort(rand(n, 4), dim=1)  # a random permutation per image
            x = torch.where(apply.view(-1, 1, 1, 1), color_jitter(x, factors, order), x)
        if cfg.grayscale_p > 0:
            gray = rand(n) < cfg.grayscale_p
            x = torch.where(gray.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
        if cfg.blur_p[index] > 0:
            kernel = max(3, 2 * round(0.05 * size) + 1)  # ~10% of the side, odd
            sigma = 0.1 + 1.9 * rand(n)
            blur = (rand(n) < cfg.blur_p[index]).view(-1, 1, 1, 1)
            x = torch.where(blur, gaussian_blur(x, sigma, kernel), x)  # every image blurred, the drawn kept
        if cfg.solarize_p[index] > 0:
            sol = (rand(n) < cfg.solarize_p[index]).view(-1, 1, 1, 1)
            x = torch.where(sol & (x >= 0.5), 1 - x, x)
        return self.normalize(x)
