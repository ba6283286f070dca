"""The habits that keep the tree readable, checked by the suite: the layering contract
(import-linter, pyproject.toml's [tool.importlinter]), lint and format (ruff), small modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = ["src", "tests", "benchmarks", "scripts"]
MAX_MODULE_LINES = 350


def _run(*cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"{name} is not installed beside {sys.executable}; pip install -e '.[test]'")
    return str(path)


def test_the_layering_contract_holds():
    """A lower layer never imports a higher one, and siblings marked independent never import each other."""
    proc = _run(_tool("lint-imports"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_lint_passes():
    proc = _run(_tool("ruff"), "check", *CHECKED)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_format_is_applied():
    proc = _run(_tool("ruff"), "format", "--check", *CHECKED)
    assert proc.returncode == 0, "run `ruff format src tests benchmarks scripts`:\n" + proc.stdout[-4000:]


def test_no_module_is_over_the_size_limit_and_few_sit_at_the_top():
    package = REPO / "src" / "sparsehead"
    long = {
        str(p.relative_to(package)): n
        for p in package.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}; split them by job"
    top = sorted(p.name for p in package.glob("*.py"))
    assert len(top) < 10, f"{top}: a module belongs in the capability folder of its job"


def test_no_two_test_modules_share_a_file_name():
    # tests/ has no __init__.py: pytest imports each module by its file name, and refuses a second one.
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert not {n for n in names if names.count(n) > 1}
