"""Every registered method declares what the registry promises: parameters with defaults and
help, a display name, the state it checkpoints, and construction from explicit arguments."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import TINY
from sparsehead import config
from sparsehead.config import ModelConfig
from sparsehead.methods import METHODS, SimCLR, display_name
from sparsehead.models.backbones import build_backbone
from sparsehead.models.heads import build_head
from sparsehead.runs.model import build_model

BUILT_IN = [
    "simclr",
    "byol",
    "barlow_twins",
    "simsiam",
    "vicreg",
    "moco_v2",
    "moco_v3",
    "directclr",
    "directpred",
    "directcopy",
    "wmse",
    "swav",
]


def test_built_in_methods_are_registered_in_table_order():
    assert list(METHODS)[: len(BUILT_IN)] == BUILT_IN
    assert display_name("moco_v2") == "MoCo v2" and display_name("wmse") == "W-MSE"


@pytest.mark.parametrize("name", BUILT_IN)
def test_method_declares_params_display_name_and_state(name):
    cls = METHODS[name]
    assert cls.name == name and cls.display_name
    for f in dataclasses.fields(cls.Params):
        assert f.metadata["help"], f"{name}: method.{f.name} has no help"
    extra = ["sparsity.lam=0"] if name == "directclr" else []
    cfg = config.load(None, TINY + [f"method.name={name}", *extra])
    method = build_model(cfg)
    top = {key.split(".")[0] for key in method.state_dict()}
    assert top == set(cls.STATE), f"{name}: state_dict holds {sorted(top)}, STATE declares {cls.STATE}"


def test_methods_are_built_from_explicit_arguments():
    backbone = build_backbone(ModelConfig(backbone="resnet18", width=8, stem="cifar"), 16)
    method = SimCLR(backbone, build_head("mlp", backbone.feature_dim, 32, 16), temperature=0.2)
    assert method.params == SimCLR.Params(temperature=0.2) and method.embedding_dim == 16
    out = method(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16))
    assert out.loss.ndim == 0 and out.r.shape == (4, backbone.feature_dim)


def test_saved_configs_of_the_flat_layout_are_migrated():
    """Run folders of schema 1 saved every method's keys in one flat section."""
    flat = {
        "name": "byol",
        "temperature": None,
        "momentum": 0.9,
        "predictor_hidden_dim": 32,
        "queue_size": 4096,
        "swav_prototypes": 300,
        "loss": "nt_xent",
    }
    cfg = config.from_saved({"method": flat}, schema=1)
    assert cfg.method.params == METHODS["byol"].Params(momentum=0.9, predictor_hidden_dim=32)
    with pytest.raises(config.ConfigError, match="method.loss"):
        config.from_saved({"method": flat}, schema=2)
