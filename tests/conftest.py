"""Shared test helpers: tiny configs, running the CLI in a subprocess, locating real data."""

from __future__ import annotations

import atexit
import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Under pytest-xdist (`make test` runs two workers on a 2-core machine) each worker and the runs it
# starts get one CPU thread: two workers of two threads each would fight over the cores. Set before
# numpy and torch are imported, which read it once.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cli_forkserver import ForkServer, needs_fresh_interpreter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"  # on the path of CLI subprocesses that import a test module (plugins)
SRC = REPO / "src"
CIFAR10_ROOT = Path(os.environ.get("SPARSEHEAD_CIFAR10", REPO.parent / "shared" / "data" / "cifar10"))


def pytest_report_header(config):
    """Which CPU kernels this run uses: the numerics tests must pass under every one of them."""
    import torch

    return (
        f"CPU kernels: torch {torch.backends.cpu.get_cpu_capability()} (ATEN_CPU_CAPABILITY), oneDNN "
        f"{os.environ.get('ONEDNN_MAX_CPU_ISA', 'the machine best')} (ONEDNN_MAX_CPU_ISA)"
    )


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` (tests/cuda/) skip with one reason where torch sees no GPU; collecting them
    makes no CUDA call, so they import and skip on a CPU-only machine such as CI's."""
    import torch

    if os.environ.get("PYTEST_XDIST_WORKER"):
        _long_modules_first(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU (torch.cuda.is_available() is False); scripts/gpu_check.sh runs these on a GPU machine"
    )
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _long_modules_first(items) -> None:
    """Under pytest-xdist (`make test`: `--dist loadscope`, one module at a time to a worker, so a
    module's reference runs are built once), the modules with long work (a test marked `numerics` or
    `slow`, a module-scoped fixture) are dealt out first: the short ones then fill the gaps, and the
    workers finish together instead of one waiting on a long module dealt out last."""
    long_modules = {item.module for item in items if _is_long(item)}
    items.sort(key=lambda item: item.module not in long_modules)  # stable: each module's order kept


def _is_long(item) -> bool:
    if item.get_closest_marker("numerics") or item.get_closest_marker("slow"):
        return True
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info else ()
    return any(d.scope == "module" and d.func.__module__ == item.module.__name__ for fd in defs for d in fd)


requires_cifar10 = pytest.mark.skipif(
    not (CIFAR10_ROOT / "train").is_dir(),
    reason=f"real CIFAR-10 not found at {CIFAR10_ROOT} (set SPARSEHEAD_CIFAR10 to its folder)",
)

# The collapse alarm is off in the tiny runs of the tests of other things: their settings (lr 1e-2 at
# 8x8 pixels) can collapse an embedding in earnest (BYOL's z to an effective rank of 3 of 32 in 28
# steps), and the alarm's warning would fail them; tests/training/test_collapse.py tests the alarm.
NO_ALARM = "train.collapse_threshold=0"

# A model small enough for a few CPU steps in a test.
TINY = [
    "data.source=digits",
    "data.image_size=16",
    "model.width=8",
    "head.hidden_dim=64",
    "head.out_dim=32",
    "train.batch_size=64",
    "train.epochs=1",
    "train.progress=false",
    "train.log_every=1",
    NO_ALARM,
]

# TINY's counterpart for a generated ImageFolder: the smallest network and batch that train on it.
TINY_FOLDER = [
    "data.source=imagefolder",
    "data.cache_dir=null",
    "data.image_size=16",
    "model.width=4",
    "head.hidden_dim=16",
    "head.out_dim=8",
    "train.batch_size=8",
    "train.threads=1",
    "train.progress=false",
    "train.log_every=1",
    NO_ALARM,
]


# A timm ViT of one block, 32-d tokens, 4x4 patches of 16 px digits (16 patch tokens + CLS).
TINY_VIT = [
    "model.backbone=timm:vit_tiny_patch16_224",
    "model.timm_args.patch_size=4",
    "model.timm_args.depth=1",
    "model.timm_args.embed_dim=32",
    "model.timm_args.num_heads=2",
]


def write_jpeg(path: Path, h: int, w: int, seed: int = 0) -> None:
    """A smooth h x w JPEG (gradients and a constant channel set by `seed`)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[:h, :w]
    img = np.stack([255 * x / w, 255 * y / h, np.full((h, w), 40 + seed % 200)], axis=2).astype(np.uint8)
    Image.fromarray(img).save(path, quality=95)


def make_imagefolder(root: Path, per_class: int = 12, classes=("cat", "dog")) -> None:
    """An ImageFolder of JPEGs of varied sizes: train/ with `per_class` images a class, test/ with 3."""
    for split, n in (("train", per_class), ("test", 3)):
        for c in classes:
            for i in range(n):
                write_jpeg(root / split / c / f"{i}.jpg", 40 + 3 * i, 50 + 2 * i, seed=i)


def method_keys(name: str, *overrides: str) -> list[str]:
    """The `method.<key>=value` overrides that method `name` has: a config refuses the keys of
    other methods, so helpers shared by several methods pass their common list through this."""
    from sparsehead.methods import params_of

    return [o for o in overrides if o.split("=", 1)[0].split(".", 1)[1] in params_of(name)]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None):
    """Run `python -m sparsehead ARGS` against this checkout's source; returns CompletedProcess.
    With SPARSEHEAD_TEST_SIGKILL set, the fault-injection plugin (tests/killpoints.py) is loaded.
    The command is a child of this test process's fork server (tests/cli_forkserver.py: a process of
    its own without 4 s of imports), or a new interpreter where `env` sets what only one reads."""
    full_env = _cli_env(env)
    if needs_fresh_interpreter(env or {}):
        cmd = [sys.executable, "-m", "sparsehead", *args]
        return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    return cli_fork_server().run(list(args), full_env, cwd, timeout)


def start_cli(*args: str, env: dict | None = None):
    """run_cli's command started, not waited for: a Popen-like handle (pid, poll, send_signal, communicate)."""
    if needs_fresh_interpreter(env or {}):
        cmd = [sys.executable, "-m", "sparsehead", *args]
        return subprocess.Popen(cmd, env=_cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return cli_fork_server().start(list(args), _cli_env(env))


def _cli_env(env: dict | None) -> dict:
    full_env = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    if "SPARSEHEAD_TEST_SIGKILL" in full_env:
        full_env.update(PYTHONPATH=f"{SRC}{os.pathsep}{TESTS}", SPARSEHEAD_PLUGINS="killpoints")
    return full_env


@functools.cache
def cli_fork_server() -> ForkServer:
    server = ForkServer(tempfile.mkdtemp(prefix="sparsehead-cli-"), {**os.environ, "PYTHONPATH": str(SRC)})
    atexit.register(server.close)
    return server


def fixed_view_losses(cfg, state: dict, batches: int = 8, seed: int = 1234) -> list[float]:
    """The method's loss, in training mode and without gradient, on `batches` fixed batches of views
    of the first training images (the same images and the same augmentation draws for every
    state), one value per batch: comparing two states on them leaves out the noise of the data
    order and the views that makes the logged training loss a poor measure of learning."""
    import torch

    from sparsehead.data import datasets
    from sparsehead.data.views import ViewGenerator
    from sparsehead.runs.model import build_model

    data = datasets.load(cfg.data, "pretrain")
    views = ViewGenerator(cfg.augment, cfg.data.image_size, *data.channel_stats())
    generator = torch.Generator().manual_seed(seed)
    method = build_model(cfg)
    method.load_state_dict(state)
    method.train()  # BatchNorm on batch statistics, as in the training step
    b = cfg.train.batch_size
    with torch.no_grad():
        return [method(*views(data.images[i * b : (i + 1) * b], generator))[0].item() for i in range(batches)]


def assert_loss_fell(before: list[float], after: list[float], what: str, min_fall: float) -> None:
    """The loss on the same fixed batches fell on average by at least `min_fall` of its level
    (relative). The caller states why its margin holds whatever the float rounding."""
    import statistics

    level, end = statistics.fmean(before), statistics.fmean(after)
    fall = (level - end) / abs(level)
    summary = f"{what}: loss on fixed views {level:.4f} -> {end:.4f} (fall {fall:+.2%}, needed {min_fall:.2%})"
    print(summary)
    assert fall >= min_fall, summary


@pytest.fixture
def one_thread():
    """Tiny models: one thread is fastest, and does not fight the other tests for the cores; the
    process's thread count is given back afterwards. Use with pytest.mark.usefixtures."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_cfg(tmp_path):
    """A validated tiny digits config writing into tmp_path (extra overrides via the returned fn)."""
    from sparsehead import config

    def make(*overrides: str):
        return config.load(None, TINY + [f"train.out_dir={tmp_path}", *overrides])

    return make


def numpy_sinkhorn(scores, eps=0.05, iterations=3):
    """SwAV's Sinkhorn-Knopp written as plain loops over rows and columns (the tests' reference)."""
    q = np.exp(scores / eps).T  # (K, B)
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        for row in range(k):
            q[row] /= q[row].sum() * k
        for col in range(b):
            q[:, col] /= q[:, col].sum() * b
    return (q * b).T


def assert_same_training_state(a: dict, b: dict, total_steps: int, context: str = "") -> None:
    """Two checkpoints' training states are bitwise equal (weights, optimiser, schedule, every random
    state, data position, hooks' state) and both at `total_steps`."""
    import torch

    assert a["step"] == b["step"] == total_steps, context
    for part in ("model", "optimizer", "scheduler", "rng", "data_position", "nonfinite", "sparsity"):
        la, lb = _leaves(a[part]), _leaves(b[part])
        assert la.keys() == lb.keys(), f"{part}: {context}"
        for key in la:
            same = torch.equal(la[key], lb[key]) if isinstance(la[key], torch.Tensor) else la[key] == lb[key]
            assert same, f"{part}{key} differs; {context}"  # bitwise


def _leaves(obj, path=""):
    """Every leaf of a nested state (tensor or plain value), keyed by its path."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _leaves(val, f"{path}.{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in _leaves(val, f"{path}[{i}]").items()}
    return {path: obj}
