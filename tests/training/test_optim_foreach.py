"""The multi-tensor LARS and EMA updates (issue 36) against plain per-parameter loops written here,
the optimisers' device-side skip (found_inf) and the fused Adam/AdamW/SGD that build_optimizer makes."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from sparsehead import config
from sparsehead.methods.momentum import ema_update
from sparsehead.training.faults import gated_update
from sparsehead.training.optim import LARS, build_optimizer


def net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 5), nn.BatchNorm1d(5))


def with_grads(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    return model


def lars_by_loops(params, state, lr, momentum, weight_decay, eta):
    """LARS one parameter at a time (Barlow Twins' loop, the class docstring's maths)."""
    for p in params:
        d = p.grad
        if p.ndim > 1:
            d = d + weight_decay * p
            w_norm, d_norm = p.norm(), d.norm()
            d = d * (eta * w_norm / d_norm if w_norm > 0 and d_norm > 0 else 1.0)
        buf = state.setdefault(p, torch.zeros_like(p))
        buf.mul_(momentum).add_(d)
        p.sub_(lr * buf)


def test_foreach_lars_equals_the_per_parameter_loop_over_three_steps():
    ours, reference = net(0), net(0)
    opt = LARS(ours.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-3, eta=0.02)
    state = {}
    with torch.no_grad():
        ours[0].weight.zero_()  # a zero weight: trust ratio 1
        reference[0].weight.zero_()
    for step in range(3):
        with_grads(ours, step), with_grads(reference, step)
        opt.step()
        with torch.no_grad():
            lars_by_loops(list(reference.parameters()), state, 0.3, 0.9, 1e-3, 0.02)
    for a, b in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=2e-7, atol=1e-9)  # a rounding apart (lr * v fused or not)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "lars"])
def test_a_found_inf_update_changes_nothing_and_a_clear_one_is_the_plain_step(name):
    """gated_update with a device verdict: False (a NaN gradient) leaves weights and optimiser state
    exactly; True gives bit for bit the step without a verdict."""
    cfg = config.load(None, [f"optim.name={name}", "optim.lr=0.1", "optim.weight_decay=1e-3"]).optim
    plain, gated = net(1), net(1)
    opts = [build_optimizer(cfg, m) for m in (plain, gated)]
    for m, opt in zip((plain, gated), opts):
        with_grads(m, 0)
        opt.step()  # optimiser state exists
    before = {k: v.clone() for k, v in opts[1].state_dict()["state"][0].items()}
    weights = [p.detach().clone() for p in gated.parameters()]
    with_grads(gated, 1)
    next(gated.parameters()).grad[0] = float("nan")
    gated_update(opts[1], torch.tensor(False))
    assert all(torch.equal(a, b) for a, b in zip(weights, gated.parameters()))
    assert all(torch.equal(v, opts[1].state_dict()["state"][0][k]) for k, v in before.items())
    for m, opt, verdict in ((plain, opts[0], True), (gated, opts[1], torch.tensor(True))):
        with_grads(m, 1)
        gated_update(opt, verdict)
    for a, b in zip(plain.parameters(), gated.parameters()):
        torch.testing.assert_close(a, b, rtol=2e-7, atol=1e-9)


def test_build_optimizer_makes_fused_adam_adamw_and_sgd():
    for name in ("adam", "adamw", "sgd"):
        opt = build_optimizer(config.load(None, [f"optim.name={name}"]).optim, net(0))
        assert opt.defaults["fused"] and opt._step_supports_amp_scaling, name


def ema_by_loops(target: nn.Module, online: nn.Module, m: float) -> None:
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters()):
            t.copy_(m * t + (1 - m) * o)
        for t, o in zip(target.buffers(), online.buffers()):
            t.copy_(o)


@pytest.mark.parametrize("applied", [True, torch.tensor(True)], ids=["host", "device"])
def test_foreach_ema_equals_the_per_parameter_loop(applied):
    target, reference, online = net(2), net(2), net(3)
    online(torch.randn(4, 3, 4, 4))  # BatchNorm statistics to copy
    ema_update(target, online, 0.7, applied)
    ema_by_loops(reference, online, 0.7)
    for a, b in zip(target.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # m t + (1 - m) o, rounded differently


def test_a_skipped_step_leaves_the_ema_target_exactly():
    target, online = net(2), net(3)
    online(torch.randn(4, 3, 4, 4))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update(target, online, 0.7, torch.tensor(False))
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())
