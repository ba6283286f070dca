"""Configuration: YAML + overrides, validated before any work, one clear error per problem."""

import pytest
import yaml

from sparsehead import config
from sparsehead.config import ConfigError


def test_defaults_validate_and_overrides_apply():
    cfg = config.load(None, ["sparsity.lam=1e-4", "train.epochs=3", "head.kind=linear", "method.name=byol"])
    assert cfg.sparsity.lam == 1e-4 and isinstance(cfg.sparsity.lam, float)
    assert cfg.train.epochs == 3 and cfg.head.kind == "linear" and cfg.method.name == "byol"


def test_yaml_file_with_scientific_notation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sparsity:\n  lam: 1e-4\noptim:\n  lr: 3e-3\n")  # YAML 1.1 reads these as strings
    cfg = config.load(path)
    assert cfg.sparsity.lam == 1e-4 and cfg.optim.lr == 3e-3


@pytest.mark.parametrize(
    "override, names",
    [
        (["train.epochz=3"], ["train.epochz", "unknown key", "epochs"]),
        (["head.kind=transformer"], ["head.kind", "identity", "linear", "mlp"]),
        (["train.epochs=three"], ["train.epochs", "integer"]),
        (["train.epochs=0"], ["train.epochs", ">= 1"]),
        (["sparsity.lam=-1"], ["sparsity.lam", ">= 0"]),
        (["augment.flip_p=1.5"], ["augment.flip_p", "<= 1"]),
        (["optim.lr=0"], ["optim.lr", "> 0"]),
        (["train.progress=maybe"], ["train.progress", "true or false"]),
        (["epochs=3"], ["section.key"]),
        (["nosuchsection.key=3"], ["nosuchsection", "unknown key"]),
        (["data.source=imagefolder"], ["data.root", "required"]),
        (["data.source=imagefolder", "data.root=/no/such/folder"], ["data.root", "does not exist"]),
        (["train.device=gpu"], ["train.device", "auto"]),
    ],
)
def test_bad_values_name_the_key_and_the_fix(override, names):
    with pytest.raises(ConfigError) as err:
        config.load(None, override)
    for name in names:
        assert name in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "content, names",
    [
        (b"- train\n- epochs\n", ["holds a list, not a mapping of sections"]),
        (b"just words\n", ["holds a str, not a mapping"]),
        (bytes(range(256)), ["cannot be read as text", "give a YAML file"]),
        (b"train: {epochs: [1\n", ["is not valid YAML (line 2, column 1: expected ',' or ']'"]),
        (b"train: 5\n", ["train"]),
    ],
)
def test_a_config_file_that_is_not_a_mapping_of_sections_is_one_line_naming_it(tmp_path, content, names):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in names), message
    if content != b"train: 5\n":
        assert str(path) in message


def test_saved_config_round_trips(tmp_path):
    cfg = config.load(None, ["sparsity.lam=1e-3", "augment.blur_p=[0.5, 0.1]"])
    config.save(cfg, tmp_path / "config.yaml")
    again = config.from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == cfg


def test_every_key_is_described():
    text = config.describe()
    for key in [
        "data.source",
        "sparsity.lam",
        "sparsity.layers",
        "method.name",
        "optim.name",
        "train.batch_size",
        "head.kind",
        "model.width",
    ]:
        assert key in text
