"""Export a run's backbone for use without sparsehead: a plain torchvision ResNet state_dict, or
the same weights for detection transfer (FORMATS: torchvision-detection, detectron2).

The keys are torchvision's own (conv1.*, bn1.*, layer1.* ... layer4.*), without fc: the feature r
is the pooled output, so the loading model sets fc = nn.Identity(). A JSON sidecar records what a
user needs to rebuild the model and feed it (arch, width, stem, feature_dim, image size, the
normalisation), and `loading_snippet` prints the few lines of plain torchvision code that do it.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import torch
import torch.nn as nn

from sparsehead import config
from sparsehead.core.atomic import atomic_write, atomic_write_json
from sparsehead.core.errors import SparseheadError
from sparsehead.data.settings import crop_ratio_of
from sparsehead.export.timm_format import TIMM_FORMAT, timm_loading_snippet, timm_meta
from sparsehead.models.backbones import build_backbone, timm_name
from sparsehead.runs import checkpoint

# format -> the file suffixes it may be written as; the one list of formats (CLI choices too)
FORMATS = {
    "torchvision": (".pt", ".safetensors"),
    "torchvision-detection": (".pt", ".safetensors"),
    "detectron2": (".pkl",),
}
SUFFIXES = FORMATS["torchvision"]


class ExportError(SparseheadError, ValueError):
    """An export that cannot be written as asked."""


def backbone_state(model_state: dict) -> dict[str, torch.Tensor]:
    """The online backbone's tensors under torchvision's names (never a BYOL target's, never fc)."""
    prefix = "backbone."
    return {
        k[len(prefix) :]: v.contiguous()
        for k, v in model_state.items()
        if k.startswith(prefix) and not k.startswith(prefix + "fc.")
    }


def detectron2_state(weights: dict[str, torch.Tensor]) -> dict:
    """torchvision ResNet names -> detectron2's (stem.conv1, res2..res5, convK.norm, shortcut), as numpy
    arrays: the renaming of MoCo's convert-pretrain-to-detectron2.py. num_batches_tracked is left out
    (detectron2's FrozenBatchNorm2d has no such buffer)."""
    out = {}
    for key, value in weights.items():
        if key.endswith("num_batches_tracked"):
            continue
        name = key if key.startswith("layer") else "stem." + key
        for i in (1, 2, 3, 4):
            name = name.replace(f"layer{i}.", f"res{i + 1}.")
        for i in (1, 2, 3):
            name = name.replace(f"bn{i}.", f"conv{i}.norm.")
        name = name.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
        out[name] = value.numpy()
    return out


def detection_problem(arch: str, width: int, stem: str) -> str | None:
    """Why this backbone cannot be a detection backbone (None: it can): detectron2's and torchvision's
    detection ResNets have the ImageNet stem and the standard width."""
    if stem != "imagenet" or width != 64:
        return (
            f"detection backbones are standard ResNets (width 64, the ImageNet 7x7 stem); this run has "
            f"{arch} width {width} with the {stem} stem. Pretrain with model.width=64 model.stem=imagenet "
            "(e.g. model.backbone=resnet50 data.image_size=224) to export for detection"
        )
    return None


def export_backbone(path_or_run: str | Path, out: str | Path, format: str = "torchvision") -> dict:
    """Write the backbone of a run (its newest checkpoint) or of a checkpoint file to `out` in `format`
    (FORMATS) and a sidecar `out` with suffix .json; returns the sidecar's content."""
    out = Path(out)
    if format not in FORMATS:
        raise ExportError(f"--format {format}: unknown; choose one of {', '.join(FORMATS)}")
    if out.suffix not in FORMATS[format]:
        raise ExportError(
            f"--out {out}: the file name must end in {' or '.join(FORMATS[format])} for --format {format}"
        )
    ckpt = checkpoint.find(path_or_run)
    state = checkpoint.load(ckpt)
    cfg = config.from_dict(state["config"], check_paths=False)
    weights = backbone_state(state["model"])
    backbone = build_backbone(cfg.model, cfg.data.image_size)
    backbone.load_state_dict(weights)  # strict: the export is complete and has the right shapes
    name = timm_name(cfg.model.backbone)
    stem = None if name else ("cifar" if isinstance(backbone.maxpool, nn.Identity) else "imagenet")
    if format != "torchvision":
        problem = (
            (
                f"--format {format}: a timm backbone ({cfg.model.backbone}) cannot be exported for detection; "
                "detection exports need a torchvision ResNet (model.backbone=resnet50)"
            )
            if name
            else detection_problem(cfg.model.backbone, cfg.model.width, stem)
        )
        if problem:
            raise ExportError(problem)
    meta = (
        timm_meta(backbone, name)
        if name
        else {
            "format": "torchvision-resnet-state-dict" if format == "torchvision" else format,
            "arch": cfg.model.backbone,
            "width": cfg.model.width,
            "stem": stem,
            "feature_dim": backbone.feature_dim,
        }
    )
    meta.update(
        {
            "image_size": cfg.data.image_size,
            "eval_crop": crop_ratio_of(cfg.data, "test"),  # the crop its evaluations used
            "normalize": {"mean": list(state["data_mean"]), "std": list(state["data_std"])},
            "method": cfg.method.name,
            "step": state["step"],
            "source": str(ckpt.resolve()),
            "weights": out.name,
        }
    )
    if format == "detectron2":  # detectron2 reads input in 0-255: its PIXEL_MEAN/STD are ours x 255
        meta["detectron2"] = {
            "MODEL.PIXEL_MEAN": [round(255 * m, 3) for m in meta["normalize"]["mean"]],
            "MODEL.PIXEL_STD": [round(255 * s, 3) for s in meta["normalize"]["std"]],
            "INPUT.FORMAT": "RGB",
            "MODEL.RESNETS.STRIDE_IN_1X1": False,
            "MODEL.RESNETS.DEPTH": int(cfg.model.backbone[len("resnet") :]),
        }
        blob = pickle.dumps(
            {"model": detectron2_state(weights), "__author__": "sparsehead", "matching_heuristics": True}
        )
        atomic_write(out, lambda f: f.write(blob))
    elif out.suffix == ".safetensors":
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
    conv = (
        "nn.Conv2d(3, {w}, kernel_size=3, stride=1, padding=1, bias=False)"
        if meta["stem"] == "cifar"
        else "nn.Conv2d(3, {w}, kernel_size=7, stride=2, padding=3, bias=False)"
    ).format(w=width)
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
        lines += ["from safetensors.torch import load_file", f"model.load_state_dict(load_file({str(path)!r}))"]
    else:
        lines += [f"model.load_state_dict(torch.load({str(path)!r}, weights_only=True))"]
    return "\n".join(lines + _input_note(meta))


def _input_note(meta: dict) -> list[str]:
    mean, std = meta["normalize"]["mean"], meta["normalize"]["std"]
    size = meta["image_size"]
    return [
        "model.eval()",
        f"# input: RGB in [0, 1], the shorter side resized to {math.floor(size / meta['eval_crop'])}, the centre "
        f"{size}x{size} crop, normalised with mean={[round(m, 4) for m in mean]} std={[round(s, 4) for s in std]}",
    ]


def detection_snippet(meta: dict, path: str | Path) -> str:
    """What to run with an export for detection: torchvision code, or detectron2's config keys."""
    mean, std = meta["normalize"]["mean"], meta["normalize"]["std"]
    if meta["format"] == "detectron2":

        def value(v):  # detectron2's command-line opts: lists quoted without spaces
            return f'"{v}"'.replace(" ", "") if isinstance(v, list) else str(v)

        keys = " ".join(f"{k} {value(v)}" for k, v in meta["detectron2"].items())
        return (
            "python tools/train_net.py --config-file coco_R_50_C4_1x_sparsehead.yaml --num-gpus 8 \\\n"
            f"  MODEL.WEIGHTS {path} {keys}\n# the config file: docs/transfer.md"
        )
    load = (
        f"from safetensors.torch import load_file; state = load_file({str(path)!r})"
        if Path(path).suffix == ".safetensors"
        else f"state = torch.load({str(path)!r}, weights_only=True)"
    )
    return "\n".join(
        [
            "import torch",
            "from torchvision.models.detection import FasterRCNN",
            "from torchvision.models.detection.backbone_utils import resnet_fpn_backbone",
            load,
            f"backbone = resnet_fpn_backbone(backbone_name={meta['arch']!r}, weights=None, trainable_layers=5)",
            "backbone.body.load_state_dict(state)  # strict: every tensor of the ResNet trunk",
            f"model = FasterRCNN(backbone, num_classes=91, image_mean={[round(m, 4) for m in mean]}, "
            f"image_std={[round(s, 4) for s in std]})",
        ]
    )
