"""The momentum (EMA) copy shared by BYOL, MoCo v2, MoCo v3 and DirectPred: BYOL's cosine schedule
(Grill et al. 2020, section 3.2) at hand-computed points, the EMA update against a reference, no
gradient into the copy, and each method's losses and checkpoint keys as before the shared module."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from sparsehead.methods import BYOL, METHODS, DirectPred, MoCoV2, MoCoV3
from sparsehead.methods.momentum import constant_momentum, cosine_momentum, ema_update
from sparsehead.models.heads import mlp

EMA_METHODS = ["byol", "moco_v2", "moco_v3", "directpred"]


class TinyBackbone(nn.Sequential):
    """12 inputs (3x2x2 images) -> 16 features, with BatchNorm so that buffers are in play."""

    feature_dim = 16

    def __init__(self):
        super().__init__(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU())


# Low momenta, so that the copy moves a lot in three steps and the losses depend on it.
PARAMS = {
    "byol": dict(momentum=0.9, predictor_hidden_dim=16),
    "moco_v2": dict(momentum=0.9, queue_size=16),
    "moco_v3": dict(momentum=0.9, predictor_hidden_dim=16),
    "directpred": dict(momentum=0.9),
}


def tiny_method(name: str) -> nn.Module:
    torch.manual_seed(0)
    return METHODS.lookup(name)(TinyBackbone(), mlp(16, 32, 8), **PARAMS[name]).double().train()


def three_step_losses(method: nn.Module, total_steps: int = 10) -> list[float]:
    """The losses of three SGD steps on fixed random views, with the EMA update after each."""
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    views = torch.randn(3, 2, 8, 3, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    losses = []
    for step, (x1, x2) in enumerate(views, start=1):
        loss = method(x1, x2).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(step, total_steps)
        losses.append(loss.item())
    return losses


# ----------------------------------------------------------------------------------------------
# The schedule.


def test_cosine_schedule_at_hand_computed_steps():
    # tau_k = 1 - (1 - 0.99) (cos(pi k / 100) + 1) / 2: cos = 1, 0, -1 at k = 0, 50, 100.
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(1 - 0.01 * 2 / 2, abs=1e-15)  # 0.99
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(1 - 0.01 * 1 / 2, abs=1e-15)  # 0.995
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0, abs=1e-15)
    assert cosine_momentum(0.9, 5, 0) == pytest.approx(1 - 0.1 * (-1 + 1) / 2)  # K = 0 read as K = 1


def test_constant_schedule_is_the_base_at_every_step():
    assert [constant_momentum(0.999, k, 100) for k in (0, 50, 100)] == [0.999] * 3


@pytest.mark.parametrize(
    "method, schedule, default",
    [
        (BYOL, cosine_momentum, 0.99),
        (MoCoV3, cosine_momentum, 0.99),
        (DirectPred, cosine_momentum, 0.99),
        (MoCoV2, constant_momentum, 0.999),
    ],
)
def test_each_method_keeps_its_schedule_and_default(method, schedule, default):
    assert method.momentum_schedule is schedule
    assert method.Params().momentum == default


# ----------------------------------------------------------------------------------------------
# The update and the gradient.


def test_ema_update_matches_a_reference():
    torch.manual_seed(3)
    online, target = TinyBackbone().double(), TinyBackbone().double()
    online(torch.randn(8, 3, 2, 2, dtype=torch.float64))  # online BN statistics differ from the target's
    before = [t.detach().clone() for t in target.parameters()]
    m = 0.7
    ema_update(target, online, m)
    for t, t0, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t, m * t0 + (1 - m) * o.detach(), rtol=1e-12, atol=0)
    assert all(torch.equal(t, o) for t, o in zip(target.buffers(), online.buffers()))


@pytest.mark.parametrize("name", EMA_METHODS)
def test_the_momentum_copy_gets_no_gradient(name):
    method = tiny_method(name)
    (copy_backbone, backbone), (copy_projector, projector) = method.momentum_pairs()
    x1, x2 = torch.randn(2, 8, 3, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    method(x1, x2).loss.backward()
    copies = [*copy_backbone.parameters(), *copy_projector.parameters()]
    assert copies and all(not p.requires_grad and p.grad is None for p in copies)
    assert all(p.grad is not None for p in [*backbone.parameters(), *projector.parameters()])


# ----------------------------------------------------------------------------------------------
# Unchanged behaviour: losses recorded on the code before momentum.py (each method with its own
# copy and update), on a 2-core AMD EPYC with AVX-512 kernels, where the shared module reproduces
# them bitwise. Other CPU kernels round differently: measured up to 1.1e-7 relative with the plain
# (SSE4.1) ones, hence the tolerance; swapping a method's schedule moves these losses by ~3e-3.
RECORDED_LOSSES = {
    "byol": [3.8884994652269405, 2.319140764455856, 2.245931119672345],
    "moco_v2": [2.8652957154929832, 1.6411530124660276, 2.2048911362822015],
    "moco_v3": [2.621286388020345, 2.7802823255735865, 2.5261703889203426],
    "directpred": [3.8523893705402497, 1.5881981436255808, 0.9160946042061617],
}
# The top-level entries of each state_dict in order, as before: checkpoints saved earlier load.
RECORDED_STATE = {
    "byol": ["backbone", "projector", "predictor", "target_backbone", "target_projector"],
    "moco_v2": ["backbone", "projector", "key_backbone", "key_projector", "queue"],
    "moco_v3": ["backbone", "projector", "predictor", "key_backbone", "key_projector"],
    "directpred": ["corr", "corr_updates", "backbone", "projector", "predictor", "target_backbone", "target_projector"],
}


@pytest.mark.parametrize("name", EMA_METHODS)
def test_three_training_steps_give_the_recorded_losses(name):
    assert three_step_losses(tiny_method(name)) == pytest.approx(RECORDED_LOSSES[name], rel=1e-6, abs=0)


@pytest.mark.parametrize("name", EMA_METHODS)
def test_state_dict_keys_are_unchanged(name):
    state = tiny_method(name).state_dict()
    assert list(dict.fromkeys(key.split(".")[0] for key in state)) == RECORDED_STATE[name]
    prefix = "target_" if name in ("byol", "directpred") else "key_"
    for part in ("backbone", "projector"):
        copy_keys = [k.split(".", 1)[1] for k in state if k.startswith(f"{prefix}{part}.")]
        assert copy_keys == [k.split(".", 1)[1] for k in state if k.startswith(f"{part}.")]
