"""Detection transfer exports: detectron2's ResNet pickle (keys and shapes written out here from
detectron2's ResNet naming, not from the exporter's mapping) and torchvision's detection backbone
loaded strictly and run end to end."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import torchvision
from test_export import saved_run

from sparsehead import cli
from sparsehead.export.formats import ExportError, export_backbone

R50 = ["model.backbone=resnet50", "model.width=64", "model.stem=imagenet", "data.image_size=32"]


def detectron2_resnet_shapes(blocks, bottleneck: bool) -> dict[str, tuple]:
    """detectron2's ResNet (modeling/backbone/resnet.py) state, enumerated stage by stage: BasicStem
    stem.conv1 (7x7, 64) with its norm; stages res2..res5; each block convK with convK.norm, and a
    1x1 shortcut + shortcut.norm in the first block where the channels change (FrozenBN buffers:
    weight, bias, running_mean, running_var)."""
    shapes: dict[str, tuple] = {}

    def conv(name, cout, cin, k):
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        for buf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.norm.{buf}"] = (cout,)

    conv("stem.conv1", 64, 3, 7)
    cin = 64
    for stage, (n, mid) in enumerate(zip(blocks, (64, 128, 256, 512)), start=2):
        cout = mid * 4 if bottleneck else mid
        for b in range(n):
            name = f"res{stage}.{b}"
            if bottleneck:
                conv(f"{name}.conv1", mid, cin, 1)
                conv(f"{name}.conv2", mid, mid, 3)
                conv(f"{name}.conv3", cout, mid, 1)
            else:
                conv(f"{name}.conv1", mid, cin, 3)
                conv(f"{name}.conv2", mid, mid, 3)
            if b == 0 and cin != cout:
                conv(f"{name}.shortcut", cout, cin, 1)
            cin = cout
    return shapes


@pytest.mark.parametrize(
    "arch, blocks, bottleneck", [("resnet50", [3, 4, 6, 3], True), ("resnet18", [2, 2, 2, 2], False)]
)
def test_detectron2_pickle_has_exactly_detectron2s_resnet_keys_and_shapes(tmp_path, arch, blocks, bottleneck):
    method = saved_run(tmp_path / "run", *R50[1:], f"model.backbone={arch}")
    meta = export_backbone(tmp_path / "run", tmp_path / "d2.pkl", "detectron2")
    with open(tmp_path / "d2.pkl", "rb") as f:
        obj = pickle.load(f)
    assert obj["matching_heuristics"] is True and isinstance(obj["__author__"], str)
    model = obj["model"]
    assert all(isinstance(v, np.ndarray) for v in model.values())
    assert {k: v.shape for k, v in model.items()} == detectron2_resnet_shapes(blocks, bottleneck)
    bb = method.backbone.state_dict()  # values land under the right names, not just the right shapes
    for ours, theirs in [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.running_var", "stem.conv1.norm.running_var"),
        ("layer4.1.bn2.bias", "res5.1.conv2.norm.bias"),
        ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
        ("layer3.0.downsample.1.running_mean", "res4.0.shortcut.norm.running_mean"),
    ]:
        assert np.array_equal(model[theirs], bb[ours].numpy())
    d2 = meta["detectron2"]
    assert d2["INPUT.FORMAT"] == "RGB" and d2["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    assert d2["MODEL.PIXEL_MEAN"] == [102.0, 127.5, 153.0] and d2["MODEL.PIXEL_STD"] == [51.0, 63.75, 76.5]


def test_torchvision_detection_model_loads_the_export_strictly_and_detects(tmp_path, capsys):
    method = saved_run(tmp_path / "run", *R50)
    out = tmp_path / "body.pt"
    assert cli.main(["export", str(tmp_path / "run"), "--format", "torchvision-detection", "--out", str(out)]) == 0
    assert "backbone.body.load_state_dict(state)" in capsys.readouterr().out
    detector = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=64, max_size=64
    )
    detector.backbone.body.load_state_dict(torch.load(out, weights_only=True), strict=True)
    detector.eval()
    x = torch.rand(3, 64, 64)
    with torch.no_grad():
        trunk = x[None]
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            trunk = getattr(method.backbone, name)(trunk)
        assert torch.equal(detector.backbone.body(x[None])["3"], trunk)  # the trunk is ours, exactly
        detections = detector([x])
    assert detections[0]["boxes"].ndim == 2 and detections[0]["boxes"].shape[1] == 4
    assert json.loads(out.with_suffix(".json").read_text())["format"] == "torchvision-detection"


def test_detection_formats_refuse_cifar_stems_narrow_widths_and_wrong_suffixes(tmp_path, capsys):
    saved_run(tmp_path / "run")  # width 8, 16 px: the CIFAR stem
    with pytest.raises(ExportError, match="width 64, the ImageNet 7x7 stem.*model.width=64 model.stem=imagenet"):
        export_backbone(tmp_path / "run", tmp_path / "d2.pkl", "detectron2")
    assert cli.main(["export", str(tmp_path / "run"), "--format", "detectron2", "--out", str(tmp_path / "d2.pt")]) == 2
    assert "must end in .pkl for --format detectron2" in capsys.readouterr().err
    assert not list(tmp_path.glob("d2*"))
