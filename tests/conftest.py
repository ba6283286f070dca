"""Shared test helpers: tiny configs, running the CLI in a subprocess, locating real data."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
CIFAR10_ROOT = Path(os.environ.get("SPARSEHEAD_CIFAR10", REPO.parent / "shared" / "data" / "cifar10"))

requires_cifar10 = pytest.mark.skipif(
    not (CIFAR10_ROOT / "train").is_dir(),
    reason=f"real CIFAR-10 not found at {CIFAR10_ROOT} (set SPARSEHEAD_CIFAR10 to its folder)")

# A model small enough for a few CPU steps in a test.
TINY = ["data.source=digits", "data.image_size=16", "model.width=8", "head.hidden_dim=64",
        "head.out_dim=32", "train.batch_size=64", "train.epochs=1", "train.progress=false",
        "train.log_every=1"]


def method_keys(name: str, *overrides: str) -> list[str]:
    """The `method.<key>=value` overrides that method `name` has: a config refuses the keys of
    other methods, so helpers shared by several methods pass their common list through this."""
    from sparsehead.methods import params_of
    return [o for o in overrides if o.split("=", 1)[0].split(".", 1)[1] in params_of(name)]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None):
    """Run `python -m sparsehead ARGS` against this checkout's source; returns CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sparsehead", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tiny_cfg(tmp_path):
    """A validated tiny digits config writing into tmp_path (extra overrides via the returned fn)."""
    from sparsehead import config

    def make(*overrides: str):
        return config.load(None, TINY + [f"train.out_dir={tmp_path}", *overrides])
    return make
