"""torchvision ResNets with a CIFAR stem option, a width multiplier and no classifier (r = pooled feature)."""
from __future__ import annotations

import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

ARCHS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
         "resnet50": (Bottleneck, [3, 4, 6, 3])}


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


def build_backbone(arch: str, width: int, stem: str, image_size: int) -> WidthResNet:
    cifar = stem == "cifar" or (stem == "auto" and image_size < 64)
    return WidthResNet(arch, width, cifar_stem=cifar)
