"""The colour and blur ops of the views, on whole batches with per-image factors (torchvision's
ColorJitter, RandomGrayscale and GaussianBlur, one image at a time there).

Every op acts on the whole batch, with per-image factors and masks (torch.where) choosing what each
image gets: never on a sub-batch picked by nonzero() or a boolean index, whose size the host would
have to wait for (a host-device sync per call on a GPU). views.py chains them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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


# On CPUs the eager jitter runs on chunks of the batch of about this many values per image tensor
# (1 MiB of float32), so that its temporaries stay in the cache: about 2x faster at 224 px and 1.2x
# at 32 px than the whole batch at once (2-core Xeon, one thread). Chunks are fixed slices of a known
# size: no sync (and on GPUs, or compiled, where the ops fuse, one chunk).
CPU_CHUNK_VALUES = 2**18


def color_jitter(x, factors, order):
    """Apply the four jitter ops per image in that image's own random `order` (n, 4), to the whole
    batch at once with no host sync: hue, the costly op, runs once on the whole batch; each image's
    ops ordered before its hue are applied in three masked blend steps before it (positions 0-2,
    where the position precedes the image's hue), those after it in three steps after it
    (positions 1-3). Each image thus gets exactly its own ops in its own order."""
    n = x.shape[0]
    whole = x.device.type != "cpu" or torch.compiler.is_compiling()
    step = n if whole else max(1, CPU_CHUNK_VALUES // max(1, math.prod(x.shape[1:])))
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
