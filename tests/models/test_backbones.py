"""Backbones (CIFAR stem, width multiplier, no fc) and heads."""

import pytest
import torch
import torchvision

from sparsehead.config import ModelConfig
from sparsehead.models.backbones import build_backbone
from sparsehead.models.heads import build_head


@pytest.mark.parametrize("arch, width, dim", [("resnet18", 8, 64), ("resnet18", 64, 512), ("resnet50", 8, 256)])
def test_feature_dimension_is_the_pooled_feature(arch, width, dim):
    net = build_backbone(ModelConfig(backbone=arch, width=width, stem="cifar"), 32).eval()
    assert net.feature_dim == dim
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_stems():
    cifar = build_backbone(ModelConfig(backbone="resnet18", width=16, stem="auto"), 32)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    large = build_backbone(ModelConfig(backbone="resnet18", width=16, stem="auto"), 96)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, torch.nn.MaxPool2d)


def test_width_64_has_torchvision_names_and_shapes():
    ours = build_backbone(ModelConfig(backbone="resnet18", width=64, stem="imagenet"), 224).state_dict()
    ref = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}


@pytest.mark.parametrize("kind, layers, out", [("identity", 0, 32), ("linear", 1, 16), ("mlp", 2, 16)])
def test_heads(kind, layers, out):
    head = build_head(kind, 32, 64, 16, num_layers=2)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == layers
    assert head(torch.randn(4, 32)).shape == (4, out)


def test_three_layer_mlp_with_last_bn():
    head = build_head("mlp", 32, 64, 16, num_layers=3, last_bn=True)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
