"""The geometry of the training views, the same for every storage: which box of each image becomes
which view, flipped or not, at which size.

One crop plan (`crop_plan`: a CropSpec per view, the global views then the local crops) and one
sampler (`draw_crops`: torchvision's RandomResizedCrop boxes and a horizontal flip per image) serve
both storages. A training batch is a ViewSource, which hands the views each view's crop already cut:
- WholeImages (data.storage=memory): uint8 (n, C, H, W) whole images; each view's boxes and flips are
  drawn on the batch's device with the views' generator when that view is made (so the draws keep
  their order among the colour draws), and cut there by one grid_sample.
- CutViews (data.storage=stream): one uint8 (n, C, s, s) tensor per view, cut in the DataLoader
  workers from the full-resolution image with the boxes and flips drawn for it (stream.py).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Protocol

import torch
import torch.nn.functional as F

from sparsehead.data.augment import AugmentConfig, local_crop_size

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect-ratio range


@dataclass(frozen=True)
class CropSpec:
    """One view's geometry: a RandomResizedCrop box covering `scale` of the image area, flipped with
    probability `flip_p`, resized to size x size."""

    size: int
    scale: tuple[float, float]
    flip_p: float


def crop_plan(cfg: AugmentConfig, image_size: int) -> tuple[CropSpec, ...]:
    """The views of the resolved augmentation `cfg` (augment.resolve_recipe), in order:
    augment.global_crops global views at image_size, then augment.local_crops local crops."""
    whole = CropSpec(image_size, (cfg.crop_scale_min, cfg.crop_scale_max), cfg.flip_p)
    local = CropSpec(local_crop_size(cfg, image_size), (cfg.local_scale_min, cfg.local_scale_max), cfg.flip_p)
    return (whole,) * cfg.global_crops + (local,) * cfg.local_crops


def sample_crops(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: Optional[torch.Generator],
    device,
    tries: int = 10,
) -> torch.Tensor:
    """RandomResizedCrop boxes (top, left, h, w) as float (n, 4), torchvision's rejection rule."""
    area = height * width
    u = torch.rand(n, tries, 2, generator=generator, device=device)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.float().argmax(dim=1)  # first acceptable try

    def pick(t):
        return t.gather(1, first[:, None]).squeeze(1)

    w, h, any_ok = pick(w), pick(h), ok.any(dim=1)
    # Fallback when no try fits: the largest centred crop with an allowed aspect ratio.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    # Uniform integer offsets in [0, H - h] and [0, W - w], as torch.randint does per image.
    r = torch.rand(n, 2, generator=generator, device=device)
    top = torch.floor(r[:, 0] * (height - h + 1)).clamp(max=height - h)
    left = torch.floor(r[:, 1] * (width - w + 1)).clamp(max=width - w)
    top = torch.where(any_ok, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(any_ok, left, torch.full_like(left, (width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1)


def draw_crops(
    spec: CropSpec, n: int, height: int, width: int, generator: Optional[torch.Generator], device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes (n, 4) and flips (n,) of one view of n images of height x width: the boxes first."""
    boxes = sample_crops(n, height, width, spec.scale, RATIO, generator, device)
    return boxes, torch.rand(n, generator=generator, device=device) < spec.flip_p


def crop_flip_resize(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box, flip where asked and resize to size x size: one grid_sample."""
    n, _, height, width = x.shape
    top, left, h, w = boxes.unbind(1)
    theta = x.new_zeros(n, 2, 3)
    sx = w / width
    theta[:, 0, 0] = torch.where(flip, -sx, sx)
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def cut_whole(x: torch.Tensor, spec: CropSpec, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One view of float whole images x (n, C, H, W): its boxes and flips drawn on x's device, then cut."""
    n, _, height, width = x.shape
    boxes, flips = draw_crops(spec, n, height, width, generator, x.device)
    return crop_flip_resize(x, boxes, flips, spec.size)


class ViewSource(Protocol):
    """A training batch's pixels, whatever the storage: each view's crop on request."""

    def to(self, device: torch.device, non_blocking: bool = False) -> "ViewSource": ...

    def cut(self, k: int, spec: CropSpec, generator: Optional[torch.Generator]) -> torch.Tensor:
        """View k of the plan (its geometry `spec`), float in [0, 1], (n, C, spec.size, spec.size)."""
        ...


@dataclass
class WholeImages:
    """uint8 (n, C, H, W) whole images: each view is drawn and cut on their device (data.storage=memory)."""

    images: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> "WholeImages":
        return WholeImages(self.images.to(device, non_blocking=non_blocking))

    @functools.cached_property
    def unit(self) -> torch.Tensor:
        """The images as float in [0, 1], converted once for all the views."""
        return self.images.float().div_(255)

    def cut(self, k: int, spec: CropSpec, generator: Optional[torch.Generator]) -> torch.Tensor:
        return cut_whole(self.unit, spec, generator)


@dataclass
class CutViews:
    """One uint8 (n, C, s, s) tensor per view of the plan, already cut and flipped (data.storage=stream)."""

    crops: tuple[torch.Tensor, ...]

    def to(self, device: torch.device, non_blocking: bool = False) -> "CutViews":
        return CutViews(tuple(c.to(device, non_blocking=non_blocking) for c in self.crops))

    def cut(self, k: int, spec: CropSpec, generator: Optional[torch.Generator]) -> torch.Tensor:
        return self.crops[k].float().div_(255)
