"""Export a run's backbone for use without sparsehead: a plain torchvision ResNet state_dict.

The keys are torchvision's own (conv1.*, bn1.*, layer1.* ... layer4.*), without fc: the feature r
is the pooled output, so the loading model sets fc = nn.Identity(). A JSON sidecar records what a
user needs to rebuild the model and feed it (arch, width, stem, feature_dim, image size, the
normalisation), and `loading_snippet` prints the few lines of plain torchvision code that do it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from . import checkpoint, config
from .errors import SparseheadError
from .io import atomic_write, atomic_write_json
from .export_timm import TIMM_FORMAT, timm_loading_snippet, timm_meta
from .models.backbones import build_backbone, timm_name

SUFFIXES = (".pt", ".safetensors")


class ExportError(SparseheadError, ValueError):
    """An export that cannot be written as asked."""


def backbone_state(model_state: dict) -> dict[str, torch.Tensor]:
    """The online backbone's tensors under torchvision's names (never a BYOL target's, never fc)."""
    prefix = "backbone."
    return {k[len(prefix):]: v.contiguous() for k, v in model_state.items()
            if k.startswith(prefix) and not k.startswith(prefix + "fc.")}


def export_backbone(path_or_run: str | Path, out: str | Path) -> dict:
    """Write the backbone of a run (its newest checkpoint) or of a checkpoint file to `out`
    (.pt or .safetensors) and a sidecar `out` with suffix .json; returns the sidecar's content."""
    out = Path(out)
    if out.suffix not in SUFFIXES:
        raise ExportError(f"--out {out}: the file name must end in .pt or .safetensors")
    ckpt = checkpoint.find(path_or_run)
    state = checkpoint.load(ckpt)
    cfg = config.from_dict(state["config"], check_paths=False)
    weights = backbone_state(state["model"])
    backbone = build_backbone(cfg.model, cfg.data.image_size)
    backbone.load_state_dict(weights)  # strict: the export is complete and has the right shapes
    name = timm_name(cfg.model.backbone)
    meta = timm_meta(backbone, name) if name else {
        "format": "torchvision-resnet-state-dict", "arch": cfg.model.backbone, "width": cfg.model.width,
        "stem": "cifar" if isinstance(backbone.maxpool, nn.Identity) else "imagenet",
        "feature_dim": backbone.feature_dim}
    meta.update({
        "image_size": cfg.data.image_size,
        "normalize": {"mean": list(state["data_mean"]), "std": list(state["data_std"])},
        "method": cfg.method.name, "step": state["step"], "source": str(ckpt.resolve()),
        "weights": out.name,
    })
    if out.suffix == ".safetensors":
        from safetensors.torch import save
        blob = save(weights, metadata={"sparsehead": json.dumps(meta)})
        atomic_write(out, lambda f: f.write(blob))
    else:
        atomic_write(out, lambda f: torch.save(weights, f))
    atomic_write_json(out.with_suffix(".json"), meta)
    return meta


def loading_snippet(meta: dict, path: str | Path) -> str:
    """Plain torch/torchvision (or timm) code that rebuilds the exported backbone as `model` and loads it."""
    if meta["format"] == TIMM_FORMAT:
        return "\n".join(timm_loading_snippet(meta, path) + _input_note(meta))
    arch, width = meta["arch"], meta["width"]
    block = "Bottleneck" if arch == "resnet50" else "BasicBlock"
    layers = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3]}[arch]
    conv = ("nn.Conv2d(3, {w}, kernel_size=3, stride=1, padding=1, bias=False)" if meta["stem"] == "cifar"
            else "nn.Conv2d(3, {w}, kernel_size=7, stride=2, padding=3, bias=False)").format(w=width)
    lines = ["import torch, torch.nn as nn, torchvision"]
    if width == 64:
        lines += [f"model = torchvision.models.{arch}()"]
    else:  # torchvision's ResNet with every stage's width scaled by width/64: same module names
        lines += [
            f"from torchvision.models.resnet import ResNet, {block}",
            "class WidthResNet(ResNet):",
            "    def __init__(self, width):",
            "        self.width = width",
            f"        super().__init__({block}, {layers})",
            "    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):",
            "        if planes == 64:",
            "            self.inplanes = self.width",
            "        return super()._make_layer(block, planes * self.width // 64, blocks, stride, dilate)",
            f"model = WidthResNet({width})",
        ]
    if meta["stem"] == "cifar" or width != 64:
        lines += [f"model.conv1 = {conv}"]
    if width != 64:
        lines += [f"model.bn1 = nn.BatchNorm2d({width})"]
    if meta["stem"] == "cifar":
        lines += ["model.maxpool = nn.Identity()  # the CIFAR stem: 3x3 stride 1, no max-pool"]
    lines += [f"model.fc = nn.Identity()  # model(x) is the {meta['feature_dim']}-d feature r"]
    if Path(path).suffix == ".safetensors":
        lines += ["from safetensors.torch import load_file",
                  f"model.load_state_dict(load_file({str(path)!r}))"]
    else:
        lines += [f"model.load_state_dict(torch.load({str(path)!r}, weights_only=True))"]
    return "\n".join(lines + _input_note(meta))


def _input_note(meta: dict) -> list[str]:
    mean, std = meta["normalize"]["mean"], meta["normalize"]["std"]
    return ["model.eval()",
            f"# input: RGB in [0, 1], {meta['image_size']}x{meta['image_size']}, normalised with "
            f"mean={[round(m, 4) for m in mean]} std={[round(s, 4) for s in std]}"]
