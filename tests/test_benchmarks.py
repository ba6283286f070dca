"""Every benchmark runs against the current package: each script's toy mode, in a process of its own
(a child of the tests' fork server, tests/cli_forkserver.py).

The scripts are found by globbing benchmarks/*.py (modules named _*.py are their shared helpers),
so a new benchmark without a `--toy` mode fails here. CIFAR-10 is pointed at a missing folder:
the toy modes then make synthetic images, as on a fresh clone, and the run is the same everywhere.
"""

from __future__ import annotations

import os

import pytest

from conftest import REPO, SRC, cli_fork_server

pytestmark = pytest.mark.slow  # eight subprocesses of a few seconds each

BENCHMARKS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))
# gpu_throughput's toy mode predates --toy: --dry-run, which writes a JSON per part (simclr, vit and the
# streamed JPEGs; here with the per-region report; throughput.py's --toy turns --regions on itself).
TOY_ARGS = {"gpu_throughput.py": lambda tmp: ["--dry-run", "--regions", "--out-dir", str(tmp / "gpu")]}


# gpu_throughput's dry run belongs to the device session's tests (make test-device-session).
SCRIPTS = [
    pytest.param(p, marks=pytest.mark.device_session) if p.name == "gpu_throughput.py" else p for p in BENCHMARKS
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
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
    done = cli_fork_server().run(args, env, REPO, timeout=300, script=str(script))
    assert done.returncode == 0, f"{script.name} {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{script.name} printed no results"
