"""The exported backbone is a plain torchvision state_dict: the printed torch/torchvision code
(no sparsehead) loads it and computes the same features as the project's backbone."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from conftest import TINY
from sparsehead import cli, config
from sparsehead.export.formats import export_backbone, loading_snippet
from sparsehead.runs import checkpoint
from sparsehead.runs.model import build_model


def saved_run(run_dir, *overrides):
    """A run folder holding one checkpoint of a freshly built model with random BatchNorm
    statistics (so eval-mode features depend on every exported tensor)."""
    cfg = config.load(None, TINY + list(overrides))
    torch.manual_seed(0)
    method = build_model(cfg)
    with torch.no_grad():
        for m in method.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    checkpoint.save(
        run_dir,
        {
            "model": method.state_dict(),
            "step": 3,
            "config": config.to_dict(cfg),
            "data_mean": [0.4, 0.5, 0.6],
            "data_std": [0.2, 0.25, 0.3],
        },
        step=3,
    )
    return method.eval()


def bare_torchvision_model(snippet: str) -> torch.nn.Module:
    assert "sparsehead" not in snippet
    namespace: dict = {}
    exec(snippet, namespace)  # the code `sparsehead export` prints for users
    return namespace["model"]


@pytest.mark.parametrize(
    "width, image_size, stem, suffix",
    [
        (64, 32, "cifar", ".pt"),
        (64, 64, "imagenet", ".safetensors"),
        (8, 16, "cifar", ".safetensors"),
        (8, 64, "imagenet", ".pt"),
    ],
)
def test_exported_backbone_gives_the_same_features_in_bare_torchvision(tmp_path, width, image_size, stem, suffix):
    method = saved_run(tmp_path / "run", f"model.width={width}", f"data.image_size={image_size}")
    out = tmp_path / f"backbone{suffix}"
    meta = export_backbone(tmp_path / "run", out)
    assert (meta["arch"], meta["width"], meta["stem"], meta["feature_dim"]) == ("resnet18", width, stem, 8 * width)
    assert json.loads(out.with_suffix(".json").read_text()) == meta
    snippet = loading_snippet(meta, out)
    if width == 64:  # the stock torchvision constructor, nothing else
        assert "torchvision.models.resnet18()" in snippet and "class " not in snippet
        stock = set(torchvision.models.resnet18().state_dict()) - {"fc.weight", "fc.bias"}
        exported = torch.load(out, weights_only=True) if suffix == ".pt" else load_file(str(out))
        assert set(exported) == stock
    model = bare_torchvision_model(snippet)
    x = torch.randn(3, 3, image_size, image_size)
    with torch.no_grad():
        ours, theirs = method.backbone(x), model(x)
    assert theirs.shape == (3, 8 * width)
    assert torch.equal(ours, theirs)


def test_byol_exports_the_online_backbone_not_the_target(tmp_path):
    method = saved_run(tmp_path / "run", "method.name=byol")
    state = checkpoint.load(checkpoint.find(tmp_path / "run"))
    state["model"] = {
        k: v + 1 if k.startswith("target_") and v.is_floating_point() else v for k, v in state["model"].items()
    }  # a target that differs from the online net
    state.pop("format")
    path = checkpoint.save(tmp_path / "run2", state, step=3)
    meta = export_backbone(path, tmp_path / "b.pt")  # a checkpoint file, not a folder
    model = bare_torchvision_model(loading_snippet(meta, tmp_path / "b.pt"))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), method.backbone(x))


def test_export_command_prints_how_to_load_and_leaves_no_temporary_files(tmp_path, capsys):
    saved_run(tmp_path / "run")
    out = tmp_path / "exported" / "backbone.pt"
    assert cli.main(["export", str(tmp_path / "run"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "load it without sparsehead" in printed and f"torch.load({str(out)!r}, weights_only=True)" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["backbone.json", "backbone.pt"]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["normalize"] == {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}
    assert sidecar["image_size"] == 16 and sidecar["step"] == 3
    assert cli.main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "backbone.onnx")]) == 2
    assert "must end in .pt or .safetensors" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "neither a checkpoint file nor a run folder" in capsys.readouterr().err
