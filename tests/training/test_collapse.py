"""The collapse monitor (training/collapse.py): its online estimates are the offline diagnostics of
the same embeddings (analysis.metrics), in one process and under DDP, and its alarm fires within
the first epochs of a run made to collapse on digits (SimSiam without its predictor), not in a
healthy one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import REPO, TINY
from ddp_harness import WORLD, run_on_ranks, shard
from sparsehead import config
from sparsehead.analysis.metrics import spectral_summary
from sparsehead.config import TrainConfig
from sparsehead.methods import METHODS, register
from sparsehead.methods.simsiam import SimSiam
from sparsehead.runs import checkpoint
from sparsehead.runs.metrics_log import read_metrics
from sparsehead.runs.model import build_model
from sparsehead.training.collapse import CollapseError, CollapseMonitor, EmbeddingWindow
from sparsehead.training.loop import pretrain

# Online and offline reduce the same rows in another order (the ring's): equal to float64 round-off.
TOLERANCE = 1e-9


def lidar_of_pairs(z1: np.ndarray, z2: np.ndarray, delta: float = 1e-4, eps: float = 1e-8) -> float:
    """Thilak et al. 2023 for two views of each image, written out with numpy."""
    e = np.stack([z1, z2], axis=1).astype(np.float64)
    n, q, d = e.shape
    mu_i = e.mean(1)
    b = mu_i - mu_i.mean(0)
    dev = (e - mu_i[:, None]).reshape(-1, d)
    w, u = np.linalg.eigh(dev.T @ dev / (n * (q - 1)) + delta * np.eye(d))
    root = u @ np.diag(w**-0.5) @ u.T
    lam = np.clip(np.linalg.eigvalsh(root @ (b.T @ b / (n - 1)) @ root), 0, None)
    p = lam / lam.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def batches(steps: int, batch: int, seed: int = 0):
    """Steps of (r, (z1, z2)): r of 80 dims with a decaying spectrum, z of 16 from r plus view noise."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(80, 16, generator=g)
    for _ in range(steps):
        r = torch.randn(batch, 80, generator=g) * torch.logspace(0, -3, 80) + 0.3
        yield r, tuple(r @ mix + 0.1 * torch.randn(batch, 16, generator=g) for _ in range(2))


def monitor(window: int, *overrides: str) -> CollapseMonitor:
    return CollapseMonitor(config.load(None, TINY + [f"train.collapse_window={window}", *overrides]).train, "RUN")


def test_the_window_keeps_the_newest_rows_of_every_part():
    w = EmbeddingWindow(5)
    for start in (0, 3, 6):
        rows = torch.arange(start, start + 3, dtype=torch.float32)[:, None]
        w.add({"a": rows, "b": -rows})
    filled = w.filled()
    assert sorted(filled["a"].flatten().tolist()) == [4, 5, 6, 7, 8]
    assert torch.equal(filled["b"], -filled["a"])  # row i of each part is the same image


@pytest.mark.parametrize("window", [48, 200])  # fewer rows than r's 80 dims (Gram matrices), and more
def test_online_measures_equal_the_offline_diagnostics_of_the_same_embeddings(window):
    mon, seen = monitor(window), []
    for r, z in batches(7, 32):  # 224 rows: the ring wraps
        mon.observe(torch.zeros(32), r, z)
        seen.append((r, *z))
    logs = mon.logs()
    r, z1, z2 = (torch.cat(parts)[-window:].numpy() for parts in zip(*seen))
    assert logs["collapse/window"] == window
    for key, x in (("r", r), ("z", z1)):
        offline = spectral_summary(x)
        for measure in ("effective_rank", "rankme", "top_eig_share"):
            assert logs[f"{key}/{measure}"] == pytest.approx(offline[measure], rel=TOLERANCE), (key, measure)
    assert logs["z/lidar"] == pytest.approx(lidar_of_pairs(z1, z2), rel=1e-7)


def test_non_finite_rows_are_left_out_and_an_off_monitor_logs_nothing():
    mon = monitor(64)
    steps = list(batches(2, 32))
    mon.observe(torch.zeros(32), steps[0][0], steps[0][1])
    mon.observe(torch.zeros(32), torch.full((32, 80), float("nan")), steps[1][1])  # a skipped step
    assert mon.logs()["collapse/window"] == 32
    off = monitor(64, "train.collapse_monitor=false")
    off.observe(torch.zeros(32), *steps[0])
    assert off.logs() == {} and off.window.count == 0


def test_the_alarm_waits_for_a_full_window_then_warns_once_and_notes_the_progress_bar():
    mon = monitor(64, "train.collapse_threshold=0.1")
    constant = torch.ones(32, 80)  # everything on one point: effective rank 0
    mon.observe(torch.zeros(32), constant, (constant[:, :16], constant[:, :16]))
    mon.logs()
    assert mon.notes(1) == {}  # half a window: no verdict yet
    mon.observe(torch.zeros(32), constant, (constant[:, :16], constant[:, :16]))
    mon.logs()
    with pytest.warns(UserWarning, match=r"collapse alarm at step 2: the effective rank of r 0.0/64, z 0.0/16"):
        assert mon.notes(2) == {"collapse": "r erank 0.0/64, z erank 0.0/16"}
    mon.logs()
    assert mon.notes(3) == {"collapse": "r erank 0.0/64, z erank 0.0/16"} and mon.stop is None  # no new warning


def _gathered(rank: int) -> dict:
    mon = monitor(128)
    for r, z in batches(2, 64):  # every rank draws the global batches and observes its shard: 64 rows each
        mon.observe(torch.zeros(32), shard(r, rank), tuple(shard(v, rank) for v in z))
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in mon.logs().items()}


def test_under_ddp_the_measures_are_those_of_the_gathered_window():
    whole = monitor(128)
    for r, z in batches(2, 64):
        for rank in range(WORLD):  # the same rows as the ranks' windows hold together
            whole.observe(torch.zeros(32), shard(r, rank), tuple(shard(v, rank) for v in z))
    expected = whole.logs()
    for got in run_on_ranks(_gathered):
        assert {k: float(v) for k, v in got.items()} == pytest.approx(expected, rel=TOLERANCE)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_gives_the_monitor_z_of_its_global_views(name):
    settings = {"moco_v2": ["method.queue_size=64"], "directclr": ["sparsity.lam=0"]}.get(name, [])
    method = build_model(config.load(None, TINY + [f"method.name={name}", "data.image_size=8", *settings]))
    x = torch.randn(64, 3, 8, 8)
    out = method(x, x.flip(3))
    assert len(out.z) == (1 if name == "moco_v2" else 2)  # MoCo v2's second view is a key (moco_symmetric: 2)
    assert all(z.shape == (64, method.embedding_dim) for z in out.z) and out.r.shape[0] == 64


# --- end to end on digits -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simsiam_without_predictor():
    """SimSiam whose predictor is the identity: Chen & He 2021 (Table 1) show it collapses. Registered
    for this module only: the tests that list every method may run next in this process."""

    @register("simsiam_no_predictor")
    class NoPredictor(SimSiam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.predictor = nn.Identity()

    yield "simsiam_no_predictor"
    METHODS.unregister("simsiam_no_predictor")


# The default alarm (TINY turns it off for the tests of other things).
ALARM = f"train.collapse_threshold={TrainConfig().collapse_threshold}"
TWO_EPOCHS = TINY + [ALARM, "train.epochs=2", "train.checkpoint_every=0", "train.on_collapse=stop"]


@pytest.mark.parametrize("spectra", ["step", "thread"])  # thread: the alarm acts at the next logging step
def test_a_run_made_to_collapse_stops_within_its_first_epochs_with_a_checkpoint(
    simsiam_without_predictor, tmp_path, spectra
):
    overrides = [f"method.name={simsiam_without_predictor}", f"train.collapse_spectra={spectra}"]
    with pytest.raises(CollapseError, match="collapse alarm at step") as err:
        pretrain(config.load(None, TWO_EPOCHS + overrides), tmp_path)
    step = read_metrics(tmp_path)[-1]["step"]
    assert step <= 2 * 22 and f"checkpoint of step {step}" in str(err.value)  # 22 steps an epoch
    assert "train.on_collapse=warn" in str(err.value) and "sparsehead analyze" in str(err.value)
    assert checkpoint.list_checkpoints(tmp_path)[-1].name == f"ckpt-{step:08d}.pt"


def test_a_healthy_run_raises_no_alarm(tmp_path, recwarn):
    pretrain(config.load(REPO / "configs" / "demo.yaml", TWO_EPOCHS), tmp_path)  # the demo's recipe, TINY's size
    assert not [w for w in recwarn if "collapse" in str(w.message)]
    last = [line for line in read_metrics(tmp_path) if "z/effective_rank" in line][-1]
    assert last["z/effective_rank"] > 0.1 * 32 and last["r/effective_rank"] > 0.1 * 64


def test_a_monitor_that_cannot_compute_its_measures_costs_its_log_line_not_the_run(monkeypatch):
    from sparsehead.training import collapse

    def fail(rows):
        raise torch.linalg.LinAlgError("eigh did not converge")

    monkeypatch.setattr(collapse, "window_measures", fail)
    mon = monitor(4)
    mon.observe(torch.zeros(4), torch.randn(4, 8), (torch.randn(4, 4), torch.randn(4, 4)))
    with pytest.warns(UserWarning, match="collapse monitor: no measures at this step .*did not converge"):
        assert mon.logs() == {}
    assert mon.notes(1) == {} and mon.stop_reason(1) is None
