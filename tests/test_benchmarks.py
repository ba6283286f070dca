"""Every benchmark runs against the current package: each script's toy mode, in a subprocess.

The scripts are found by globbing benchmarks/*.py (modules named _*.py are their shared helpers),
so a new benchmark without a `--toy` mode fails here. CIFAR-10 is pointed at a missing folder:
the toy modes then make synthetic images, as on a fresh clone, and the run is the same everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, SRC

pytestmark = pytest.mark.slow  # eight subprocesses of a few seconds each

BENCHMARKS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))
# gpu_throughput's toy mode predates --toy: --dry-run, which writes a JSON of results (here with the
# per-region report; throughput.py's --toy turns --regions on itself).
TOY_ARGS = {"gpu_throughput.py": lambda tmp: ["--dry-run", "--regions", "--out", str(tmp / "gpu.json")]}


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_toy_mode_runs(script, tmp_path):
    args = TOY_ARGS.get(script.name, lambda tmp: ["--toy"])(tmp_path)
    # one thread: the toy steps are tiny, and spare threads only contend with other tests for the cores
    env = dict(
        os.environ,
        PYTHONPATH=str(SRC),
        SPARSEHEAD_CIFAR10=str(tmp_path / "no-cifar10"),
        OMP_NUM_THREADS="1",
        TMPDIR=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{script.name} {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{script.name} printed no results"
