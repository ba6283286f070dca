"""Whole images of varied sizes as one training batch (data.decode=device): every view cut straight
from the full-size images by one crop-and-resize, no resize before it.

The decoded images of a batch differ in size (ImageNet's run from under 100 to over 4000 px a side),
so they are not padded into one (n, C, Hmax, Wmax) tensor (one large image would multiply the batch's
memory) nor cut one by one (a Python loop and a kernel launch per image). They lie one after another
in one flat uint8 buffer, each in the memory layout its decoder gave it (CHW from nvJPEG, HWC from
libjpeg on the CPU), and an image's pixel (c, y, x) is flat[offset + c * sc + y * sy + x * sx]. A view
of all the images is then a few gathers from that buffer: the crop's box and flip come from the views'
uniforms by the in-memory views' rule (crops.crops_from_uniforms, each box drawn on its own image's
size), and each output pixel is the bilinear blend of its four nearest source pixels, exactly what the
in-memory views' grid_sample computes (border padding, align_corners=False; the tests check it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from sparsehead.data.crops import CropSpec, crops_from_uniforms


def _dense(img: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The uint8 (C, H, W) image's pixels as one 1-D view of its memory (CHW or HWC dense as decoders give
    them; any other layout copied to CHW), and the channel, row and column strides of a pixel in it."""
    hwc = img.permute(1, 2, 0)
    if hwc.is_contiguous() and not img.is_contiguous():
        return hwc.reshape(-1), img.stride()
    _, h, w = img.shape
    return img.contiguous().view(-1), (h * w, w, 1)


@dataclass
class ImageBatch:
    """n decoded uint8 RGB images of varied sizes on one device (the views cut them there: crops.ViewSource)."""

    flat: torch.Tensor  # uint8 (total,): every image's pixels, one after another
    layout: torch.Tensor  # int64 (n, 4): each image's offset in `flat`, and its channel, row and column strides
    sizes: torch.Tensor  # float32 (n, 2): each image's height and width

    @classmethod
    def of(cls, images: Sequence[torch.Tensor], device: torch.device) -> "ImageBatch":
        """The batch of uint8 (3, H, W) images (on `device` already, or on the CPU: copied). The loop over the
        images only reads their shapes and strides; their pixels are joined by one torch.cat."""
        images = [img.to(device, non_blocking=True) for img in images]
        offsets, pieces, layout, sizes = 0, [], [], []
        for img in images:
            flat, strides = _dense(img)
            pieces.append(flat)
            layout.append((offsets, *strides))
            sizes.append(img.shape[1:])
            offsets += img.numel()
        # The small tables go over from pinned memory, without waiting on the device.
        pin = device.type == "cuda"
        layout_t, sizes_t = torch.tensor(layout, dtype=torch.int64), torch.tensor(sizes, dtype=torch.float32)
        if pin:
            layout_t, sizes_t = layout_t.pin_memory(), sizes_t.pin_memory()
        return cls(torch.cat(pieces), layout_t.to(device, non_blocking=True), sizes_t.to(device, non_blocking=True))

    def to(self, device: torch.device, non_blocking: bool = False) -> "ImageBatch":
        if device == self.device:
            return self
        return ImageBatch(*(t.to(device, non_blocking=non_blocking) for t in (self.flat, self.layout, self.sizes)))

    def __len__(self) -> int:
        return len(self.layout)

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.flat, self.layout, self.sizes

    def cut(self, views: range, spec: CropSpec, u: torch.Tensor) -> torch.Tensor:
        """Views `views` (of geometry `spec`) from uniforms u (len(views), n, CROP_COLUMNS): float in [0, 1],
        (len(views) * n, 3, s, s) view-major (crops.ViewSource)."""
        boxes, flips = crops_from_uniforms(spec, u, self.sizes[:, 0], self.sizes[:, 1])
        resample = compiled_crop_resize() if self.device.type == "cuda" else crop_resize
        return torch.cat([resample(self.flat, self.layout, self.sizes, b, f, spec.size) for b, f in zip(boxes, flips)])


@functools.lru_cache(maxsize=None)
def compiled_crop_resize() -> Callable:
    """crop_resize compiled for any batch's buffer length (one fused gather kernel in place of about 30
    kernels and four int64 index tensors of the views' size a view): on a GPU, where each view's
    eager launches and index traffic would cost the step. On the CPU the eager one serves (no compile
    of seconds in each process; data.decode=device is a GPU's option)."""
    return torch.compile(crop_resize, dynamic=True)


def _taps(coord: torch.Tensor, extent: torch.Tensor):
    """Bilinear taps of pixel coordinates `coord` (n, s) in images `extent` (n,) pixels long, clamped to
    the image (grid_sample's border padding): the lower and upper pixel indices and the upper's weight."""
    last = (extent - 1)[:, None]
    c = torch.minimum(coord.clamp_min(0), last)
    lower = c.floor()
    return lower.long(), torch.minimum(lower + 1, last).long(), c - lower


def crop_resize(
    flat: torch.Tensor, layout: torch.Tensor, sizes: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int
) -> torch.Tensor:
    """Box i (top, left, h, w: float (n, 4)) of image i of the batch (ImageBatch's flat, layout and sizes),
    mirrored where `flips`, resized to size x size by bilinear sampling at the centres of the output
    pixels: float (n, 3, size, size) in [0, 1]."""
    top, left, h, w = boxes.unbind(1)
    height, width = sizes.unbind(1)
    at = (torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5) / size  # output pixel centres
    y0, y1, fy = _taps(top[:, None] + at * h[:, None] - 0.5, height)
    x0, x1, fx = _taps(left[:, None] + torch.where(flips[:, None], 1 - at, at) * w[:, None] - 0.5, width)
    offset, sc, sy, sx = layout.unbind(1)
    channel = offset[:, None] + torch.arange(3, device=boxes.device) * sc[:, None]  # (n, 3)

    def pixels(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # (n, 3, size, size) float
        index = channel[:, :, None, None] + (y * sy[:, None])[:, None, :, None] + (x * sx[:, None])[:, None, None, :]
        return flat.index_select(0, index.view(-1)).view(index.shape).float()  # index_select: 2.5x [] on the CPU

    fx, fy = fx[:, None, None, :], fy[:, None, :, None]
    upper = torch.lerp(pixels(y0, x0), pixels(y0, x1), fx)
    lower = torch.lerp(pixels(y1, x0), pixels(y1, x1), fx)
    return torch.lerp(upper, lower, fy).div_(255)
