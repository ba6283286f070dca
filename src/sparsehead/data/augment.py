"""The augmentation settings (config section `augment`) and the recipe logic on them.

Light on purpose (no torch): the config (config/sections.py) composes this section; data/crops.py
(the views' geometry) and data/views.py (the rest) apply it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

from sparsehead.core.errors import ConfigError
from sparsehead.core.options import opt

AUGMENT_OPS = ("crop", "blur", "color_drop", "color_distort", "flip", "solarize")


@dataclass
class AugmentConfig:
    recipe: Literal["simclr", "byol", "none"] = opt(
        "simclr", "view recipe: simclr (symmetric), byol (asymmetric blur/solarise) or none"
    )
    crop_scale_min: float = opt(0.08, "RandomResizedCrop smallest area fraction", min=0.0, max=1.0, exclusive_min=True)
    crop_scale_max: float = opt(1.0, "RandomResizedCrop largest area fraction", min=0.0, max=1.0, exclusive_min=True)
    flip_p: float = opt(0.5, "probability of a horizontal flip", min=0.0, max=1.0)
    jitter_p: float = opt(0.8, "probability of colour jitter", min=0.0, max=1.0)
    color_strength: float = opt(
        0.5,
        "colour strength s: jitter (0.8s, 0.8s, 0.8s, 0.2s); 0.5 = the SimCLR CIFAR recipe (0.4, 0.4, 0.4, 0.1)",
        min=0.0,
    )
    grayscale_p: float = opt(0.2, "probability of converting a view to grayscale", min=0.0, max=1.0)
    blur_p: list = opt([0.0, 0.0], "Gaussian blur probability for view 1 and view 2", min=0.0, max=1.0)
    solarize_p: list = opt([0.0, 0.0], "solarisation probability for view 1 and view 2", min=0.0, max=1.0)
    # Multi-crop (SwAV, Caron et al. 2020): the views above are the global crops; local crops are
    # extra small crops of each image (SwAV's 2 x 224 + 6 x 96 px, scale (0.05, 0.14)).
    global_crops: int = opt(
        2,
        "number of global crops per image (views at data.image_size); more than 2 only for the methods "
        "that take multi-crop (docs/methods.md, multi-crop); the third and later take view 2's blur and "
        "solarisation probabilities",
        min=2,
    )
    local_crops: int = opt(
        0,
        "number of local crops per image besides the global views (SwAV: 6; "
        "methods that take them: docs/methods.md, multi-crop)",
        min=0,
    )
    local_size: int = opt(
        0, "side of the local crops in pixels (0: SwAV's 96/224 of data.image_size, e.g. 14 at 32 px)", min=0
    )
    local_scale_min: float = opt(
        0.05, "local crops: RandomResizedCrop smallest area fraction (SwAV: 0.05)", min=0.0, max=1.0, exclusive_min=True
    )
    local_scale_max: float = opt(
        0.14,
        "local crops: RandomResizedCrop largest area fraction (SwAV: 0.14; "
        "its global crops use augment.crop_scale_min=0.14)",
        min=0.0,
        max=1.0,
        exclusive_min=True,
    )
    compile: bool = opt(
        False,
        "torch.compile the views' colour chain (jitter, grayscale, blur, solarisation, normalisation) into a few "
        "fused kernels: slow first batches (one compile per view size), then fewer kernel launches; needs a C++ "
        "compiler on CPU",
    )
    ops: Optional[list[Literal[AUGMENT_OPS]]] = opt(
        None,
        "the transformations to use, Huang et al. 2023's ablation: any of crop, blur, color_drop "
        "(grayscale), color_distort (jitter), flip, solarize, e.g. [crop, color_distort]; each keeps "
        "the probability set above (or by the recipe), the others are off (null: all of the recipe's)",
    )

    def check(self) -> None:
        """Scale ranges in order; augment.ops names only ops the recipe and settings leave on."""
        if self.crop_scale_min > self.crop_scale_max:
            raise ConfigError("augment.crop_scale_min: must not exceed augment.crop_scale_max")
        if self.local_scale_min > self.local_scale_max:
            raise ConfigError("augment.local_scale_min: must not exceed augment.local_scale_max")
        if problem := inactive_ops_problem(self):
            raise ConfigError(problem)


# Named recipes (formulas: docs/references.md, augmentations): values that override the config's augment.* fields.
RECIPES = {
    "simclr": {},
    "byol": {"blur_p": [1.0, 0.1], "solarize_p": [0.0, 0.2]},
    "none": {
        "crop_scale_min": 1.0,
        "crop_scale_max": 1.0,
        "flip_p": 0.0,
        "jitter_p": 0.0,
        "grayscale_p": 0.0,
        "blur_p": [0.0, 0.0],
        "solarize_p": [0.0, 0.0],
    },
}

# augment.ops (Huang et al. 2023's ablations), per op: the settings that switch it off, whether the
# settings leave it on, and what turns it on (the fix in the error of a listed op that is off).
OPS_OFF = {
    "crop": {"crop_scale_min": 1.0, "crop_scale_max": 1.0},  # the whole image, only resized
    "blur": {"blur_p": [0.0, 0.0]},
    "color_drop": {"grayscale_p": 0.0},
    "color_distort": {"jitter_p": 0.0},
    "flip": {"flip_p": 0.0},
    "solarize": {"solarize_p": [0.0, 0.0]},
}
INACTIVE_OP_FIX = {
    "crop": "set augment.crop_scale_min below 1, e.g. augment.crop_scale_min=0.08",
    "blur": "set augment.blur_p, e.g. augment.blur_p=[0.5,0.5] (lightly's default, used by Huang et al. 2023)",
    "color_drop": "set augment.grayscale_p, e.g. augment.grayscale_p=0.2",
    "color_distort": "set augment.jitter_p and augment.color_strength above 0, e.g. augment.jitter_p=0.8",
    "flip": "set augment.flip_p, e.g. augment.flip_p=0.5",
    "solarize": "set augment.solarize_p, e.g. augment.solarize_p=[0.0,0.2]",
}


def local_crop_size(cfg: AugmentConfig, image_size: int) -> int:
    """The side of the local crops: augment.local_size, or SwAV's 96/224 of the image size."""
    return cfg.local_size or max(1, round(image_size * 96 / 224))


def is_active(cfg: AugmentConfig, op: str) -> bool:
    return {
        "crop": cfg.crop_scale_min < 1.0,
        "blur": max(cfg.blur_p) > 0,
        "color_drop": cfg.grayscale_p > 0,
        "color_distort": cfg.jitter_p > 0 and cfg.color_strength > 0,
        "flip": cfg.flip_p > 0,
        "solarize": max(cfg.solarize_p) > 0,
    }[op]


def resolve_recipe(cfg: AugmentConfig) -> AugmentConfig:
    """The recipe's values over the config's, then every op not in augment.ops switched off."""
    cfg = dataclasses.replace(cfg, **RECIPES[cfg.recipe])
    for op in OPS_OFF if cfg.ops is not None else ():
        if op not in cfg.ops:
            cfg = dataclasses.replace(cfg, **OPS_OFF[op])
    return cfg


def inactive_ops(cfg: AugmentConfig) -> list[str]:
    """Ops listed in augment.ops that the recipe and settings leave switched off (a config error)."""
    resolved = resolve_recipe(cfg)
    return [op for op in cfg.ops or () if not is_active(resolved, op)]


def inactive_ops_problem(cfg: AugmentConfig) -> Optional[str]:
    """The config error of augment.ops listing ops that are off, with the fix (None: fine)."""
    idle = inactive_ops(cfg)
    if not idle:
        return None
    return (
        f"augment.ops: lists {', '.join(idle)}, which the {cfg.recipe} recipe and augment.* settings "
        f"switch off; {INACTIVE_OP_FIX[idle[0]]}"
    )
