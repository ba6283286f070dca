"""The configs shipped inside the package: found by name or path, listed by `sparsehead configs`, packaged."""

from __future__ import annotations

import pytest

from conftest import REPO
from sparsehead import cli, config
from sparsehead.config import names


def test_the_repository_configs_folder_is_the_shipped_one():
    assert (REPO / "configs").resolve() == names.SHIPPED
    assert names.SHIPPED.is_relative_to(REPO / "src" / "sparsehead")


@pytest.mark.parametrize("name", ["cifar10_simclr", "cifar10_simclr.yaml"])
def test_a_name_with_or_without_yaml_loads_the_shipped_file(name):
    assert config.load(name) == config.load(REPO / "configs" / "cifar10_simclr.yaml")


def test_a_nested_name_and_a_path_still_work(tmp_path, monkeypatch):
    assert config.load("reproduce/base") == config.load(REPO / "configs" / "reproduce" / "base.yaml")
    own = tmp_path / "demo.yaml"  # a file of the same name as a shipped config: the file wins
    own.write_text("train:\n  epochs: 7\n")
    monkeypatch.chdir(tmp_path)
    assert config.load("demo.yaml").train.epochs == 7
    assert config.load(own).train.epochs == 7
    assert config.load("demo").train.epochs != 7


def test_an_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(config.ConfigError) as err:
        config.load("cifar10_simclr_typo")
    message = str(err.value)
    assert "cifar10_simclr_typo" in message and "does not exist" in message
    for name in ("cifar10_simclr", "demo", "reproduce/base"):
        assert name in message
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "demo.yaml")  # an absolute path is a path, never a name


def test_configs_command_lists_each_with_its_first_comment_line(capsys):
    assert cli.main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines}
    files = sorted(p.relative_to(names.SHIPPED).with_suffix("").as_posix() for p in names.SHIPPED.rglob("*.yaml"))
    assert sorted(listed) == files
    first = (names.SHIPPED / "demo.yaml").read_text().splitlines()[0].lstrip("# ")
    assert first in listed["demo"]


def test_package_data_includes_every_shipped_config():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sparsehead"]
    package = REPO / "src" / "sparsehead"
    packaged = {p for pattern in patterns for p in package.glob(pattern)}
    assert set(names.SHIPPED.rglob("*.yaml")) <= {p.resolve() for p in packaged}


def test_version_has_one_source(capsys):
    import sparsehead

    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"sparsehead {sparsehead.__version__}"
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sparsehead.__version__"}
