"""The geometry of the training views, the same for every storage: which box of each image becomes
which view, flipped or not, at which size.

One crop plan (`crop_plan`: a CropSpec per view, the global views then the local crops) and one
rule for the boxes (`boxes_from_uniforms`: torchvision's RandomResizedCrop, with a horizontal flip
per image) serve both storages. A training batch is a ViewSource, which hands the views each view's crop already cut:
- WholeImages (data.storage=memory): uint8 (n, C, H, W) whole images; the boxes and flips come from
  the uniforms views.py draws for the whole call on the batch's device (crops_from_uniforms), and
  the views of one size are cut there by one grid_sample.
- CutViews (data.storage=stream): one uint8 (n, C, s, s) tensor per view, cut in the DataLoader
  workers from the full-resolution image with the boxes and flips `draw_crops` draws for it (stream.py).
- image_batch.ImageBatch (data.storage=stream, data.decode=device): whole images of varied sizes
  decoded on the device; the boxes come from the views' uniforms as for WholeImages, each drawn on its
  own image's size (boxes_from_uniforms takes a size per image).
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
CROP_TRIES = 10  # RandomResizedCrop's tries before its fallback
# The uniforms one view of one image takes (views.py draws them all at once): the tries' area and
# aspect draws, then the box's top and left, then the flip.
CROP_COLUMNS = 2 * CROP_TRIES + 3


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
    tries: int = CROP_TRIES,
) -> torch.Tensor:
    """RandomResizedCrop boxes (top, left, h, w) as float (n, 4), torchvision's rejection rule."""
    u = torch.rand(n, tries, 2, generator=generator, device=device)
    offsets = torch.rand(n, 2, generator=generator, device=device)
    return boxes_from_uniforms(u, offsets, height, width, scale, ratio)


def boxes_from_uniforms(
    u: torch.Tensor,
    offsets: torch.Tensor,
    height: int | torch.Tensor,
    width: int | torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> torch.Tensor:
    """RandomResizedCrop boxes (top, left, h, w) as float (n, 4) from uniforms in [0, 1): u (n, tries, 2)
    the tries' area and log-aspect draws, `offsets` (n, 2) the box's top and left draws; the images'
    height and width ints, or float (n,) tensors: each image's own (whole images of varied sizes)."""
    if isinstance(height, torch.Tensor):  # one size per row, against each row's tries
        return _boxes(u, offsets, height, width, height[:, None], width[:, None], scale, ratio)
    return _boxes(u, offsets, height, width, height, width, scale, ratio)


def _fallback(height, width, ratio: tuple[float, float]):
    """RandomResizedCrop's box when no try fits: the largest centred crop with an allowed aspect ratio."""
    if isinstance(height, torch.Tensor):
        in_ratio = width / height
        fw = torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]), width)
        return fw, torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]), height)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return width, round(width / ratio[0])
    if in_ratio > ratio[1]:
        return round(height * ratio[1]), height
    return width, height


def _boxes(u, offsets, height, width, tries_height, tries_width, scale, ratio) -> torch.Tensor:
    """boxes_from_uniforms, the images' sizes given twice: as they are, and broadcastable to u's tries."""
    area = tries_height * tries_width
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= tries_width) & (h > 0) & (h <= tries_height)
    first = ok.float().argmax(dim=1)  # first acceptable try

    def pick(t):
        return t.gather(1, first[:, None]).squeeze(1)

    w, h, any_ok = pick(w), pick(h), ok.any(dim=1)
    fw, fh = _fallback(height, width, ratio)
    w, h = torch.where(any_ok, w, _filled(w, fw)), torch.where(any_ok, h, _filled(h, fh))
    # Uniform integer offsets in [0, H - h] and [0, W - w], as torch.randint does per image.
    top = torch.floor(offsets[:, 0] * (height - h + 1)).clamp(max=height - h)
    left = torch.floor(offsets[:, 1] * (width - w + 1)).clamp(max=width - w)
    top = torch.where(any_ok, top, _filled(top, (height - fh) // 2))
    left = torch.where(any_ok, left, _filled(left, (width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1)


def _filled(like: torch.Tensor, value) -> torch.Tensor:
    """`value` as a tensor like `like`: a Python number filled in on its device (no copy to it), a tensor as it is."""
    return value if isinstance(value, torch.Tensor) else torch.full_like(like, value)


def draw_crops(
    spec: CropSpec, n: int, height: int, width: int, generator: Optional[torch.Generator], device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes (n, 4) and flips (n,) of one view of n images of height x width: the boxes first."""
    boxes = sample_crops(n, height, width, spec.scale, RATIO, generator, device)
    return boxes, torch.rand(n, generator=generator, device=device) < spec.flip_p


def crops_from_uniforms(
    spec: CropSpec, u: torch.Tensor, height: int | torch.Tensor, width: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes (..., 4) and flips (...) of views of `spec` of height x width images from uniforms
    u (..., CROP_COLUMNS) in [0, 1); height and width ints, or float tensors broadcastable to u's
    leading dimensions (each image's own size: (n,) for u (views, n, CROP_COLUMNS))."""
    lead, tries = u.shape[:-1], 2 * CROP_TRIES
    u = u.reshape(-1, CROP_COLUMNS)
    if isinstance(height, torch.Tensor):
        height, width = height.expand(lead).reshape(-1), width.expand(lead).reshape(-1)
    boxes = boxes_from_uniforms(u[:, :tries].view(-1, CROP_TRIES, 2), u[:, tries:-1], height, width, spec.scale, RATIO)
    return boxes.view(*lead, 4), (u[:, -1] < spec.flip_p).view(lead)


def crop_theta(boxes: torch.Tensor, flip: torch.Tensor, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """The affine_grid matrices (n, 2, 3) taking the output grid to each box, mirrored where `flip`."""
    top, left, h, w = boxes.to(dtype).unbind(1)
    sx, zero = w / width, torch.zeros_like(w)
    row_x = torch.stack([torch.where(flip, -sx, sx), zero, (2 * left + w) / width - 1], dim=1)
    row_y = torch.stack([zero, h / height, (2 * top + h) / height - 1], dim=1)
    return torch.stack([row_x, row_y], dim=1)


def cut_whole(x: torch.Tensor, spec: CropSpec, u: torch.Tensor) -> torch.Tensor:
    """Views of `spec` of float whole images x (n, C, H, W), one per row of uniforms u (V, n, CROP_COLUMNS):
    each image cropped to its box, flipped where drawn and resized (bilinear), (V * n, C, s, s) view-major."""
    (v, n), (_, c, height, width), s = u.shape[:2], x.shape, spec.size
    boxes, flips = crops_from_uniforms(spec, u, height, width)
    theta = crop_theta(boxes.view(-1, 4), flips.view(-1), height, width, x.dtype)
    grid = F.affine_grid(theta, [v * n, c, s, s], align_corners=False)
    # The views' grids stacked along the height: one grid_sample of the images, no copy of them per view.
    grid = grid.view(v, n, s, s, 2).transpose(0, 1).reshape(n, v * s, s, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(n, c, v, s, s).permute(2, 0, 1, 3, 4).reshape(v * n, c, s, s)


class ViewSource(Protocol):
    """A training batch's pixels, whatever the storage: the crops of a run of views on request."""

    device: torch.device  # where the pixels are

    def to(self, device: torch.device, non_blocking: bool = False) -> "ViewSource": ...

    def __len__(self) -> int:
        """The images in the batch."""
        ...

    def cut(self, views: range, spec: CropSpec, u: torch.Tensor) -> torch.Tensor:
        """Views `views` of the plan (all of geometry `spec`), float in [0, 1], (len(views) * n, C, s, s)
        view-major; u (len(views), n, CROP_COLUMNS): their uniforms (whole images are cut where they say)."""
        ...


@dataclass
class WholeImages:
    """uint8 (n, C, H, W) whole images: the views are cut on their device (data.storage=memory)."""

    images: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> "WholeImages":
        return WholeImages(self.images.to(device, non_blocking=non_blocking))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def device(self) -> torch.device:
        return self.images.device

    @functools.cached_property
    def unit(self) -> torch.Tensor:
        """The images as float in [0, 1], converted once for all the views."""
        return self.images.float().div_(255)

    def cut(self, views: range, spec: CropSpec, u: torch.Tensor) -> torch.Tensor:
        return cut_whole(self.unit, spec, u)


@dataclass
class CutViews:
    """One uint8 (n, C, s, s) tensor per view of the plan, already cut and flipped (data.storage=stream)."""

    crops: tuple[torch.Tensor, ...]

    def to(self, device: torch.device, non_blocking: bool = False) -> "CutViews":
        return CutViews(tuple(c.to(device, non_blocking=non_blocking) for c in self.crops))

    def __len__(self) -> int:
        return len(self.crops[0])

    @property
    def device(self) -> torch.device:
        return self.crops[0].device

    def cut(self, views: range, spec: CropSpec, u: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.crops[k] for k in views]).float().div_(255)
