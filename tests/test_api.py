"""The Python API (sparsehead.api) on the tiny digits config: the same results and errors as the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import sparsehead
from conftest import SRC, TINY
from sparsehead import api, config

OVERRIDES = {key: value for key, value in (item.split("=", 1) for item in TINY)} | {"train.max_steps": "3"}


def tiny() -> dict:
    """TINY as keyword overrides, values parsed as the CLI would."""
    import yaml

    return {key: yaml.safe_load(value) for key, value in OVERRIDES.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return sparsehead.pretrain("demo", run_dir=tmp_path_factory.mktemp("api") / "run", **tiny())


def test_import_stays_cheap():
    code = "import sys, sparsehead; print('torch' in sys.modules, 'sparsehead.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(SRC)}, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"]
    assert sparsehead.pretrain is api.pretrain and sparsehead.load_backbone is api.load_backbone


def test_pretrain_returns_the_run_folder_with_the_overrides_applied(run):
    assert (run / "config.yaml").is_file()
    saved = config.load(run / "config.yaml")
    assert saved.train.max_steps == 3 and saved.model.width == 8 and saved.data.image_size == 16


def test_pretrain_takes_a_config_object_and_validates_like_the_cli(tmp_path):
    cfg = config.load("demo", [f"{k}={v}" for k, v in OVERRIDES.items()])
    with pytest.raises(config.ConfigError, match="train.max_steps"):
        sparsehead.pretrain(cfg, run_dir=tmp_path / "bad", **{"train.max_steps": -1})
    with pytest.raises(config.ConfigError, match="section.key"):
        sparsehead.pretrain(cfg, run_dir=tmp_path / "bad", max_steps=3)
    with pytest.raises(config.ConfigError, match="shipped config"):
        sparsehead.pretrain("no_such_config")
    assert not (tmp_path / "bad").exists()


def test_evaluate_returns_the_record_written_by_the_cli_path(run):
    record = sparsehead.evaluate(run, protocol="knn")
    assert 0.0 <= record["r"]["top1"] <= 1.0
    assert json.loads((run / "eval" / "knn.json").read_text())["r"] == record["r"]
    with pytest.raises(config.ConfigError, match="no_such_option"):
        sparsehead.evaluate(run, protocol="knn", no_such_option=1)


def test_load_backbone_normalises_then_gives_r(run):
    from sparsehead.runs.model import load_trained

    trained = load_trained(run)
    images = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        expected = trained.method.backbone((images - trained.views.mean) / trained.views.std)
        got = sparsehead.load_backbone(run)(images)
    torch.testing.assert_close(got, expected)
