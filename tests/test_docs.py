"""The documentation's code: the Python API's docstring examples run (scripts/api_examples.py), here on the tiny
model; scripts/wheel_check.sh runs them as written on the installed wheel, and `make docs` builds the site."""

from __future__ import annotations

import importlib.util

import yaml

from conftest import REPO, TINY
from sparsehead import api

spec = importlib.util.spec_from_file_location("api_examples", REPO / "scripts" / "api_examples.py")
api_examples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(api_examples)


def test_the_api_docstring_examples_run(tmp_path, monkeypatch):
    """Every example of sparsehead.api, with the tiny model and batch under the examples' own overrides."""
    tests = api_examples.api_doctests()  # before the patch: the finder reads pretrain's docstring from the module
    assert {test.name for test in tests} == {
        f"sparsehead.api{name}" for name in ("", ".pretrain", ".evaluate", ".load_backbone")
    }
    tiny = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in TINY)}
    real = api.pretrain
    monkeypatch.setattr(api, "pretrain", lambda config, run_dir=None, **o: real(config, run_dir, **(tiny | o)))
    results = api_examples.run_examples(tests, tmp_path)
    assert results.failed == 0 and results.attempted == sum(len(test.examples) for test in tests)
