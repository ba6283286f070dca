"""A method defined outside the package: this module registers it with the decorator, the CLI
imports it through SPARSEHEAD_PLUGINS, pretrains it with its own method.<key>, and `report`
names it. Keys it does not have (another method's, or a typo) are refused naming its own.

The class is defined and registered by define_method(): at import when the CLI imports this
module as a plugin (SPARSEHEAD_PLUGINS names it), and by a fixture in this process, which removes
it again afterwards, so that no other test module (collected before or after) sees it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sparsehead.methods
from conftest import SRC, TESTS, TINY, run_cli
from sparsehead import config
from sparsehead.core.options import opt
from sparsehead.core.plugins import plugin_modules

NAME = "toy_align_uniform"


def align_uniform_loss(z1: torch.Tensor, z2: torch.Tensor, spread: float) -> torch.Tensor:
    """Wang & Isola's alignment + spread x uniformity on L2-normalised embeddings (a plain function)."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    align = (z1 - z2).pow(2).sum(dim=1).mean()
    uniform = torch.pdist(torch.cat([z1, z2])).pow(2).mul(-2).exp().mean().log()
    return align + spread * uniform


def define_method():
    @sparsehead.methods.register(NAME)
    class ToyAlignUniform(sparsehead.methods.Method):
        display_name = "Toy Align-Uniform"

        @dataclass
        class Params:
            spread: float = opt(1.0, "weight of the uniformity term", min=0.0)

        def forward(self, x1, x2):
            r1, z1, z2 = self.project_views(x1, x2)
            return sparsehead.methods.MethodOutput(align_uniform_loss(z1, z2, self.params.spread), {}, r1)

    return ToyAlignUniform


if Path(__file__).stem in plugin_modules():  # imported by the CLI as a plugin
    define_method()


@pytest.fixture(scope="module")
def method():
    yield define_method()
    sparsehead.methods.METHODS.unregister(NAME)


def plugin_env() -> dict:
    return {
        "SPARSEHEAD_PLUGINS": Path(__file__).stem,
        "PYTHONPATH": os.pathsep.join([str(SRC), str(Path(__file__).parent), str(TESTS)]),
    }


def test_its_parameters_are_config_keys_and_others_are_refused(method):
    cfg = config.load(None, [f"method.name={NAME}", "method.spread=0.25"])
    assert cfg.method.params == method.Params(spread=0.25) and cfg.method.spread == 0.25
    assert f"method.spread [{NAME}]" in config.describe()
    with pytest.raises(config.ConfigError) as err:
        config.load(None, [f"method.name={NAME}", "method.temperature=0.1"])  # SimCLR's, MoCo's, ...
    assert "method.temperature" in str(err.value) and "name, spread" in str(err.value)
    with pytest.raises(config.ConfigError, match="method.spread: -1.0 is out of range"):
        config.load(None, [f"method.name={NAME}", "method.spread=-1"])
    with pytest.raises(config.ConfigError, match=f"not a parameter of method.name=simclr \\(a key of {NAME}\\)"):
        config.load(None, ["method.spread=1"])


def test_it_is_usable_as_a_library_without_a_config(method):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    backbone.feature_dim = 6
    toy = method(backbone, nn.Linear(6, 4), spread=0.5)
    out = toy(torch.randn(8, 12), torch.randn(8, 12))
    assert out.loss.shape == () and out.r.shape == (8, 6) and toy.params.spread == 0.5


def test_the_cli_pretrains_it_and_report_names_it(tmp_path):
    run = tmp_path / "toy"
    done = run_cli(
        "pretrain",
        *TINY,
        f"method.name={NAME}",
        "method.spread=0.5",
        "train.max_steps=3",
        f"train.out_dir={tmp_path}",
        "--run-dir",
        str(run),
        env=plugin_env(),
    )
    assert done.returncode == 0, done.stderr
    assert "spread: 0.5" in (run / "config.yaml").read_text()
    report = run_cli("report", str(run), env=plugin_env())
    assert report.returncode == 0, report.stderr
    assert "| Toy Align-Uniform | mlp | 0 |" in report.stdout

    refused = run_cli(
        "pretrain", *TINY, f"method.name={NAME}", "method.queue_size=64", "--print-config", env=plugin_env()
    )
    assert refused.returncode == 2 and "method.queue_size" in refused.stderr
    assert "the keys of toy_align_uniform are: name, spread" in refused.stderr
    without = run_cli("report", str(run))  # the run's method is unknown without its plugin
    assert without.returncode == 2 and "SPARSEHEAD_PLUGINS" in without.stderr
