"""Batched augmentation on the training device: one random draw per call, one cut and one colour chain
per size of view.

A call draws every uniform its views need at once from the views' generator (VIEW_COLUMNS per view
and image: the crop's, then the colour's). The views of one size (the global views; the local
crops) are cut together (crops.py: crop, flip and resize in one grid_sample of the whole images, or
the workers' crops joined) and coloured together by `colour_views`, a pure function of (crops,
uniforms) that augment.compile hands to torch.compile. The ops follow torchvision's per-image
transforms (RandomResizedCrop, RandomHorizontalFlip, ColorJitter with a random op order,
RandomGrayscale, GaussianBlur, RandomSolarize) on whole batches (colour.py): no op makes the host
wait for the device.
"""

from __future__ import annotations

import itertools
from typing import Optional

import torch
import torch.nn.functional as F

from sparsehead.data.augment import AugmentConfig, resolve_recipe
from sparsehead.data.colour import color_jitter, gaussian_blur, grayscale
from sparsehead.data.crops import CROP_COLUMNS, CropSpec, ViewSource, WholeImages, crop_plan, cut_whole

# The colour uniforms of one view of one image, by column: the jitter's four factors (brightness,
# contrast, saturation, hue), whether it applies and its op order's four sort keys; then grayscale,
# the blur's sigma and whether it applies, solarisation.
JITTER_FACTORS, JITTER_APPLY, JITTER_ORDER = slice(0, 4), 4, slice(5, 9)
GRAY, BLUR_SIGMA, BLUR, SOLARIZE = 9, 10, 11, 12
COLOUR_COLUMNS = 13
VIEW_COLUMNS = CROP_COLUMNS + COLOUR_COLUMNS
# The columns of the views' probabilities (ViewGenerator.probs: one row per view).
P_JITTER, P_GRAY, P_BLUR, P_SOLARIZE = range(4)


def colour_views(
    x: torch.Tensor,
    u: torch.Tensor,
    probs: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    strength: float,
    ops: tuple[bool, bool, bool, bool],
    dtype: torch.dtype,
    memory_format: torch.memory_format,
) -> torch.Tensor:
    """Colour jitter, grayscale, blur and solarisation of the float crops x (v * n, C, s, s) in [0, 1] of
    v views (view-major), then normalised to `dtype`: each image as its uniforms u (v, n, COLOUR_COLUMNS)
    and its view's probabilities (probs (v, 4)) say. `ops` (jitter, grayscale, blur, solarise) leaves
    out the ops no view takes. Pure: the same (x, u) give the same views, eager or compiled."""
    jitter, gray, blur, solarize = ops
    flat = u.reshape(-1, COLOUR_COLUMNS)

    def drawn(column: int, op: int) -> torch.Tensor:  # per image: the uniform below its view's probability
        return (u[..., column] < probs[:, op, None]).view(-1, 1, 1, 1)

    if jitter:
        scaled, lo = 0.8 * strength, max(1 - 0.8 * strength, 0.0)  # Python floats: no tensor copied to the device
        f = flat[:, JITTER_FACTORS]
        factors = torch.cat(
            [lo + (1 + scaled - lo) * f[:, :3], (0.2 * strength) * (2 * f[:, 3:] - 1)], dim=1
        )  # hue in [-0.2s, 0.2s]
        order = torch.argsort(flat[:, JITTER_ORDER], dim=1)  # a uniform random permutation per image
        x = torch.where(drawn(JITTER_APPLY, P_JITTER), color_jitter(x, factors, order), x)
    if gray:
        x = torch.where(drawn(GRAY, P_GRAY), grayscale(x).expand_as(x), x)
    if blur:
        kernel = max(3, 2 * round(0.05 * x.shape[-1]) + 1)  # ~10% of the side, odd
        sigma = 0.1 + 1.9 * flat[:, BLUR_SIGMA]
        x = torch.where(drawn(BLUR, P_BLUR), gaussian_blur(x, sigma, kernel), x)  # every image blurred, the drawn kept
    if solarize:
        x = torch.where(drawn(SOLARIZE, P_SOLARIZE) & (x >= 0.5), 1 - x, x)
    return ((x - mean) / std).to(dtype).contiguous(memory_format=memory_format)


def views_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The training views' dtype: bfloat16 where the step runs in bf16 on a GPU (autocast casts the
    first layer's input to it anyway: half the bytes written and read), else float32."""
    return torch.bfloat16 if precision == "bf16" and device.type == "cuda" else torch.float32


def runs_of_one_size(plan: tuple[CropSpec, ...]) -> list[tuple[CropSpec, range]]:
    """The plan's runs of consecutive views of one geometry (the global views, the local crops)."""
    runs, start = [], 0
    for spec, group in itertools.groupby(plan):
        count = len(list(group))
        runs.append((spec, range(start, start + count)))
        start += count
    return runs


class ViewGenerator:
    """Makes the augmented, normalised views of a batch on its own device: augment.global_crops global
    views (2 unless multi-crop), then augment.local_crops local crops; `dtype` the views' dtype
    (views_dtype), augment.compile whether the colour chain is compiled."""

    def __init__(
        self,
        cfg: AugmentConfig,
        image_size: int,
        mean,
        std,
        memory_format: torch.memory_format = torch.contiguous_format,
        dtype: torch.dtype = torch.float32,
    ):
        self.cfg = c = resolve_recipe(cfg)
        self.size = image_size
        self.plan = crop_plan(c, image_size)  # the views' geometry, global views first
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        # The third and later views (global or local) take view 2's blur and solarisation probabilities.
        self.probs = torch.tensor(
            [[c.jitter_p, c.grayscale_p, c.blur_p[min(k, 1)], c.solarize_p[min(k, 1)]] for k in range(len(self.plan))]
        )
        self.memory_format, self.dtype = memory_format, dtype
        self.chain = torch.compile(colour_views, dynamic=False) if c.compile else colour_views

    def to_device(self, device: torch.device) -> None:
        """The constants moved to the batch's device once, not at every batch (each copy would be a host sync)."""
        if self.mean.device != device:
            self.mean, self.std, self.probs = self.mean.to(device), self.std.to(device), self.probs.to(device)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        self.to_device(x.device)
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
        (multi_crop=False: the first two global views, the pair of the two-view recipe). One draw of
        uniforms (views, n, VIEW_COLUMNS); then per run of views of one size, one cut and one colour chain."""
        source = WholeImages(images) if isinstance(images, torch.Tensor) else images
        plan = self.plan if multi_crop else self.plan[:2]
        n = len(source)
        u = torch.rand(len(plan), n, VIEW_COLUMNS, generator=generator, device=source.device)
        views = []
        for spec, run in runs_of_one_size(plan):
            here = u[run.start : run.stop]
            crops = source.cut(run, spec, here[..., :CROP_COLUMNS])
            views += self.colour(crops, here[..., CROP_COLUMNS:], run).unflatten(0, (len(run), n)).unbind(0)
        return views

    def view(self, x: torch.Tensor, index: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        """One augmented global view of float whole images x in [0, 1]; `index` picks the per-view probabilities."""
        u = torch.rand(1, x.shape[0], VIEW_COLUMNS, generator=generator, device=x.device)
        crops = cut_whole(x, self.plan[index], u[..., :CROP_COLUMNS])
        return self.colour(crops, u[..., CROP_COLUMNS:], range(index, index + 1))

    def colour(self, crops: torch.Tensor, u: torch.Tensor, run: range) -> torch.Tensor:
        """The colour chain of the crops of views `run` of the plan, their colour uniforms u."""
        self.to_device(crops.device)
        c = self.cfg
        ops = (
            c.jitter_p > 0 and c.color_strength > 0,
            c.grayscale_p > 0,
            any(c.blur_p[min(k, 1)] > 0 for k in run),
            any(c.solarize_p[min(k, 1)] > 0 for k in run),
        )
        probs = self.probs[run.start : run.stop]
        return self.chain(
            crops, u, probs, self.mean, self.std,
            strength=c.color_strength, ops=ops, dtype=self.dtype, memory_format=self.memory_format,
        )  # fmt: skip
