"""Backbones f without classifier (r = pooled feature): torchvision ResNets with a CIFAR stem option and a
width multiplier, or any timm model (model.backbone=timm:<name>)."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from sparsehead.core import distributed as dist
from sparsehead.core.errors import ConfigError
from sparsehead.core.options import opt
from sparsehead.models.cpu_layout import contiguous_note, onednn_runs_avx2_kernels, unsafe_avx2_convolutions


@dataclass
class ModelConfig:
    backbone: str = opt(
        "resnet18",
        "resnet18, resnet34, resnet50 (torchvision), or timm:<name>, any timm model (pip install "
        "'sparsehead[timm]'), e.g. timm:vit_small_patch16_224, timm:convnext_tiny; created without classifier, "
        "r = its pooled features, dimension read from the model (docs/timm.md)",
    )
    width: int = opt(64, "base width (64 = the standard ResNet); smaller for CPU-sized runs; ResNets only", min=1)
    stem: Literal["auto", "cifar", "imagenet"] = opt(
        "auto",
        "cifar: 3x3 conv stride 1, no max-pool; imagenet: 7x7 stride 2 + max-pool; "
        "auto: cifar below 64 px; ResNets only",
    )
    timm_args: dict = opt(
        {},
        "keyword arguments of timm.create_model for a timm:<name> backbone, a mapping (in YAML, or "
        "model.timm_args.patch_size=4 on the command line), e.g. patch_size, depth, embed_dim, num_heads, "
        "drop_path_rate; img_size defaults to data.image_size for the models that take one; the pooling is "
        "timm's global_pool (ViT: token = the CLS token, the default, or avg = mean of the patch tokens)",
    )
    sync_batchnorm: bool = opt(True, "convert BatchNorm to SyncBatchNorm under DDP")


ARCHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


def feature_dim(arch: str, width: int) -> int:
    """The dimension of r: the last stage's width, 8 x width x the block's expansion."""
    return 8 * width * ARCHS[arch][0].expansion


class WidthResNet(ResNet):
    """torchvision's ResNet with base width `width` instead of 64 (module names unchanged, so a
    width-64 state_dict loads into torchvision.models.resnet18/50 directly)."""

    def __init__(self, arch: str, width: int = 64, cifar_stem: bool = False):
        block, layers = ARCHS[arch]
        self._width_scale = width / 64
        super().__init__(block, layers)
        if cifar_stem:  # 3x3 stride 1, no max-pool: small images keep their resolution
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.feature_dim = feature_dim(arch, width)
        self.fc = nn.Identity()
        for m in self.modules():  # torchvision's init, re-applied to the replaced stem
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:  # first stage: the stem's output width
            self.inplanes = round(64 * self._width_scale)
        return super()._make_layer(block, round(planes * self._width_scale), blocks, stride, dilate)


# --- timm backbones: model.backbone=timm:<name>, its keyword arguments in model.timm_args -------

TIMM_PREFIX = "timm:"


def timm_name(backbone: str) -> Optional[str]:
    """The timm model name of `timm:<name>`, None for the torchvision ResNets."""
    return backbone[len(TIMM_PREFIX) :] if backbone.startswith(TIMM_PREFIX) else None


def import_timm():
    try:
        import timm
    except ImportError:
        raise ConfigError(
            "model.backbone: a timm:<name> backbone needs timm, which is not installed; "
            "install the extra: pip install 'sparsehead[timm]'"
        ) from None
    return timm


def create_timm(name: str, args: dict, image_size: int) -> nn.Module:
    """timm.create_model(name, pretrained=False, num_classes=0, **args): no classifier, so the output
    is the pooled feature r. img_size is data.image_size unless args give it, for the models that
    take one (ViTs); the call's keyword arguments are kept on the model (export rebuilds with them)."""
    timm = import_timm()
    if not timm.is_model(name):
        raise ConfigError(
            f"model.backbone: timm has no model {name!r}; list them with "
            "python -c \"import timm; print(timm.list_models('vit_*'))\""
        )
    for key in ("num_classes", "pretrained"):
        if key in args:
            raise ConfigError(f"model.timm_args.{key}: set by sparsehead (no classifier, random init); remove it")
    kwargs = {"pretrained": False, "num_classes": 0, **args}
    try:
        try:
            model = timm.create_model(name, **{"img_size": image_size, **kwargs})
            kwargs.setdefault("img_size", image_size)
        except TypeError as err:  # a CNN takes any image size and no img_size argument
            if "img_size" in args or "img_size" not in str(err):
                raise
            model = timm.create_model(name, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:
        raise ConfigError(f"model.timm_args: timm.create_model({name!r}) refused {args}: {err}") from None
    model.timm_create_kwargs = kwargs
    model.feature_dim = model.num_features
    return model


@dataclass(frozen=True)
class BackboneInfo:
    feature_dim: int
    # NHWC pays for convolutions; a ViT's only convolution is its patch embedding (docs/timm.md)
    channels_last: bool


@functools.lru_cache(maxsize=32)
def _timm_info(name: str, args_json: str, image_size: int) -> BackboneInfo:
    args = json.loads(args_json)
    with torch.device("meta"):  # no memory, no init cost: the checks run before any work
        model = create_timm(name, args, image_size)
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        if patch is not None and any(image_size % p for p in patch):
            raise ConfigError(
                f"model.timm_args.patch_size: the patch {tuple(patch)} of {name} does not divide "
                f"data.image_size={image_size}; choose a patch size that divides it (e.g. "
                f"model.timm_args.patch_size=4 for 32 px) or another data.image_size"
            )
        if args.get("img_size", image_size) != image_size and not args.get("dynamic_img_size"):
            raise ConfigError(
                f"model.timm_args.img_size: {args['img_size']} differs from data.image_size="
                f"{image_size}, the size of the views; remove it (it defaults to data.image_size)"
            )
        try:
            out = model.eval()(torch.empty(2, 3, image_size, image_size))  # eval: BatchNorm on one pixel
        except Exception as err:  # noqa: BLE001 - any timm complaint about the input size
            raise ConfigError(
                f"model.backbone: {name} with {args} cannot take {image_size} px images (data.image_size): {err}"
            ) from None
    if out.shape != (2, model.num_features):
        raise ConfigError(
            f"model.timm_args: {name} returns features of shape {tuple(out.shape)[1:]} per image, "
            "not one vector; pool them, e.g. model.timm_args.global_pool=avg (or token for a ViT)"
        )
    return BackboneInfo(model.num_features, channels_last=not hasattr(model, "patch_embed"))


def backbone_info(model_cfg, image_size: int) -> BackboneInfo:
    """What the rest of the run needs to know of the backbone, checked before any work."""
    name = timm_name(model_cfg.backbone)
    if name is None:
        if model_cfg.backbone not in ARCHS:
            raise ConfigError(
                f"model.backbone: {model_cfg.backbone!r} is not allowed; choose one of "
                f"{', '.join(ARCHS)} or timm:<name> (e.g. timm:vit_small_patch16_224)"
            )
        if model_cfg.timm_args:
            raise ConfigError(
                "model.timm_args: only read by a timm:<name> backbone; remove it for "
                f"model.backbone={model_cfg.backbone}"
            )
        return BackboneInfo(feature_dim(model_cfg.backbone, model_cfg.width), channels_last=True)
    return _timm_info(name, json.dumps(model_cfg.timm_args, sort_keys=True), image_size)


def build_backbone(model_cfg, image_size: int) -> nn.Module:
    """The backbone f of `model_cfg` with its `feature_dim` (the dimension of r)."""
    name = timm_name(model_cfg.backbone)
    if name is not None:
        return create_timm(name, model_cfg.timm_args, image_size)
    cifar = model_cfg.stem == "cifar" or (model_cfg.stem == "auto" and image_size < 64)
    return WidthResNet(model_cfg.backbone, model_cfg.width, cifar_stem=cifar)


def use_channels_last(model_cfg, image_size: int, device: torch.device) -> bool:
    """NHWC where it pays for the backbone and, on the CPU, where oneDNN's kernels run it safely
    (models/cpu_layout.py); a backbone kept contiguous on the CPU says so on stderr, like data.storage=auto."""
    if not backbone_info(model_cfg, image_size).channels_last:
        return False
    if device.type != "cpu" or not onednn_runs_avx2_kernels():
        return True
    with torch.device("meta"):  # only the convolutions' shapes are read
        unsafe = unsafe_avx2_convolutions(build_backbone(model_cfg, image_size))
    if unsafe and dist.is_main():
        print(contiguous_note(f"{model_cfg.backbone} of width {model_cfg.width}", unsafe), file=sys.stderr)
    return not unsafe
