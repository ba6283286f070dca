"""The papers' toy experiments: the InfoNCE of Jing et al. 2022 Eq. 2, collapse under strong augmentation and
with two layers, and the min-max ratio of Song et al. 2023 Eq. 9 against dimension."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tests.conftest import run_cli

from sparsehead.analysis import simulate

FAST = simulate.ToySetup(steps=300, batch=64)


def test_infonce_distance_matches_a_loop_over_anchors():
    z, zp = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    tau = 0.7
    losses = []
    for i in range(6):
        pos = math.exp(-((z[i] - zp[i]) ** 2).sum().item() / (2 * tau))
        neg = sum(math.exp(-((z[i] - z[j]) ** 2).sum().item() / (2 * tau)) for j in range(6) if j != i)
        losses.append(-math.log(pos / (pos + neg)))
    assert simulate.infonce_distance(z, zp, tau).item() == pytest.approx(np.mean(losses), rel=1e-10)
    batched = simulate.infonce_distance(torch.stack([z, 2 * z]), torch.stack([zp, 2 * zp]), tau)
    assert batched.shape == (2,) and batched[0].item() == pytest.approx(np.mean(losses), rel=1e-10)


def test_strong_augmentation_makes_singular_values_vanish():
    result = simulate.strong_augmentation(amplitudes=(0.1, 8.0), setup=FAST)
    weak, strong = (np.asarray(sv) for sv in result["final_singular_values"])
    block = FAST.block
    # the augmented block's singular values shrink by orders of magnitude relative to weak augmentation...
    assert strong.min() < 1e-3 * weak.min()
    assert strong[-block:].max() < 1e-2 * weak[-block:].min()
    # ...while the unaugmented directions keep growing: exactly `block` dimensions collapse
    assert strong[:-block].min() > weak[:-block].min()
    assert (strong < 1e-3 * strong.max()).sum() == block and (weak < 1e-3 * weak.max()).sum() == 0


def test_two_layers_collapse_even_with_weak_augmentation():
    result = simulate.two_layer(amplitude=0.1, setup=FAST)
    # same data, init and augmentation: one layer keeps its spread, the product W2 W1 loses dimensions
    assert result["final_min_over_max"] < 1e-2 * result["single_layer_same_setup_min_over_max"]
    w1 = np.asarray(result["W1"])
    assert w1[-1, 0] > 2 * w1[0, 0] and w1[-1, -1] < 2 * w1[0, -1]  # largest grows, smallest barely moves


def test_min_max_ratio_falls_with_dimension_and_sparse_projection_keeps_it_high():
    iid = simulate.minmax_vs_dimension(dims=(2, 32, 512), samples=200)
    assert iid["gaussian"][0] > iid["gaussian"][1] > iid["gaussian"][2] and iid["gaussian"][2] < 0.5
    assert iid["uniform"][0] > iid["uniform"][1] > iid["uniform"][2]
    proj = simulate.minmax_sparse_vs_dense(input_dim=256, out_dim=32, supports=(4, 256), samples=200)
    assert proj["sparse"][0] > 3 * proj["dense"]


def test_simulate_cli_writes_figures_and_json(tmp_path):
    res = run_cli("simulate", "collapse", "--steps", "30", "--out", str(tmp_path / "c"))
    assert res.returncode == 0, res.stderr
    assert "one layer, k=8" in res.stdout
    data = json.loads((tmp_path / "c" / "collapse.json").read_text())
    assert data["strong_augmentation"]["setup"]["steps"] == 30
    for name in ("collapse_strong_augmentation.png", "collapse_two_layer.png"):
        assert (tmp_path / "c" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    simulate.run_minmax(tmp_path / "m", samples=50)  # the same code path as `simulate minmax`
    assert (tmp_path / "m" / "minmax.png").is_file()
    assert set(json.loads((tmp_path / "m" / "minmax.json").read_text())) == {"iid", "projection"}
    bad = run_cli("simulate", "collapse", "--steps", "0")
    assert bad.returncode == 2 and "positive integer" in bad.stderr
