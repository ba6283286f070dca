"""LARS and the warm-up + cosine schedule against closed-form values (issue 12); the weight-decay
filter's parameter groups against a rule by module type, and the linear lr scaling (issue 30).

LARS (You et al. 2017) as the SSL reference code has it (Barlow Twins' PyTorch LARS; SimCLR's
TF LARS computes the same trust ratio): for a weight w with gradient g,
    d = g + wd w,   trust = eta ||w|| / ||d||   (1 when ||w|| or ||d|| is 0),
    v <- momentum v + trust d,   w <- w - lr v,
and 1-d parameters (biases, BatchNorm weights and biases) get neither weight decay nor the trust
ratio: v <- momentum v + g. Two conventions differ elsewhere, checked and stated below:
- You et al.'s paper writes the ratio eta ||w|| / (||g|| + wd ||w||); the SSL code (and ours) uses
  ||g + wd w||, which is <= that by the triangle inequality (equal when wd = 0 or g is a
  non-negative multiple of w).
- SimCLR's TF LARS puts the learning rate inside the momentum (v <- m v + lr trust d, w <- w - v);
  Barlow Twins and ours apply it outside, which differs when lr changes between steps.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import TINY, TINY_VIT
from sparsehead import config
from sparsehead.config import OptimConfig
from sparsehead.core.errors import ConfigError
from sparsehead.runs.folder import SCHEMA
from sparsehead.runs.metrics_log import read_metrics
from sparsehead.runs.model import build_model
from sparsehead.training.loop import pretrain
from sparsehead.training.optim import LARS, build_optimizer, param_groups, warmup_cosine
from sparsehead.training.resume import config_differences


def _step_with(params, opt, grads):
    for p, g in zip(params, grads):
        p.grad = torch.as_tensor(g, dtype=p.dtype).clone()
    opt.step()


def test_lars_one_step_by_hand():
    """W = [[3, 0], [0, 4]] (||W|| = 5), G = [[0, 1.5], [2, 0]] (||G|| = 2.5, orthogonal to W).
    wd = 0.5: D = G + 0.5 W = [[1.5, 1.5], [2, 2]], ||D|| = sqrt(12.5); eta = 0.1, so
    trust = 0.1 * 5 / sqrt(12.5) = sqrt(2) / 10; lr = 0.5, first step v = trust D:
    W1 = W - 0.5 sqrt(2)/10 D. The paper's ratio would be 0.1 * 5 / (2.5 + 0.5 * 5) = 0.1 instead."""
    w = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64, requires_grad=True)
    opt = LARS([w], lr=0.5, momentum=0.9, weight_decay=0.5, eta=0.1)
    _step_with([w], opt, [[[0.0, 1.5], [2.0, 0.0]]])
    trust = math.sqrt(2) / 10
    expected = np.array([[3.0, 0.0], [0.0, 4.0]]) - 0.5 * trust * np.array([[1.5, 1.5], [2.0, 2.0]])
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-14)
    paper_trust = 0.1 * 5 / (2.5 + 0.5 * 5)
    assert not math.isclose(trust, paper_trust, rel_tol=1e-3)  # the stated convention difference


def test_lars_matches_the_paper_ratio_without_weight_decay():
    """wd = 0: trust = eta ||w|| / ||g|| in both conventions. W = [[3, 4]] (norm 5), G = [[0, 2]]
    (norm 2), eta = 0.02: trust = 0.05, W1 = W - lr * 0.05 G with lr = 1."""
    w = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    opt = LARS([w], lr=1.0, momentum=0.9, weight_decay=0.0, eta=0.02)
    _step_with([w], opt, [[[0.0, 2.0]]])
    np.testing.assert_allclose(w.detach().numpy(), [[3.0, 4.0 - 0.05 * 2.0]], rtol=1e-14)


def test_lars_trust_ratio_is_one_for_a_zero_weight_or_zero_update():
    """A zero weight (e.g. a zero-initialised layer) takes a plain momentum-SGD step of g + wd w = g."""
    w = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.5, eta=0.001)
    _step_with([w], opt, [[[1.0, -1.0], [2.0, 0.0]]])
    np.testing.assert_allclose(w.detach().numpy(), -0.1 * np.array([[1.0, -1.0], [2.0, 0.0]]), rtol=1e-14)
    v = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)  # wd w + g = 0: no step, no NaN
    opt = LARS([v], lr=0.1, momentum=0.9, weight_decay=0.5, eta=0.001)
    _step_with([v], opt, [-0.5 * np.ones((2, 2))])
    np.testing.assert_allclose(v.detach().numpy(), np.ones((2, 2)), rtol=0, atol=0)


def lars_reference(weights, grads_per_step, lrs, momentum, wd, eta):
    """Straightforward numpy LARS (Barlow Twins' convention) over several steps: `weights` a list of
    arrays, `grads_per_step[t]` their gradients at step t, `lrs[t]` the learning rate of step t."""
    weights = [np.array(w, dtype=np.float64) for w in weights]
    velocity = [np.zeros_like(w) for w in weights]
    for grads, lr in zip(grads_per_step, lrs):
        for i, (w, g) in enumerate(zip(weights, grads)):
            if w.ndim > 1:  # weights: weight decay and the trust ratio
                d = g + wd * w
                w_norm, d_norm = np.sqrt((w**2).sum()), np.sqrt((d**2).sum())
                trust = eta * w_norm / d_norm if w_norm > 0 and d_norm > 0 else 1.0
                d = trust * d
            else:  # biases and BatchNorm parameters: plain momentum SGD
                d = g
            velocity[i] = momentum * velocity[i] + d
            weights[i] = w - lr * velocity[i]
    return weights


def test_build_optimizer_lars_two_steps_on_linear_and_batchnorm_equal_the_reference():
    """Two steps of build_optimizer(lars) on Linear + BatchNorm1d with fixed gradients and an lr
    that changes between the steps (as under the schedule): the Linear weight gets the trust ratio
    and weight decay, its bias and the BatchNorm weight and bias do not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    params = list(model.parameters())  # linear weight (4, 3), linear bias, bn weight, bn bias
    start = [p.detach().numpy().copy() for p in params]
    g = torch.Generator().manual_seed(1)
    grads = [[torch.randn(p.shape, generator=g, dtype=torch.float64).numpy() for p in params] for _ in range(2)]
    cfg = OptimConfig(name="lars", lr=0.3, weight_decay=1e-2, momentum=0.9)
    opt = build_optimizer(cfg, model)
    lrs = [0.3, 0.12]
    for grads_t, lr in zip(grads, lrs):
        opt.param_groups[0]["lr"] = lr
        _step_with(params, opt, grads_t)
    expected = lars_reference(start, grads, lrs, momentum=0.9, wd=1e-2, eta=0.001)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-13, atol=1e-15)
    # the 1-d parameters took exactly the plain momentum-SGD steps, no decay, no trust ratio
    np.testing.assert_allclose(
        params[1].detach().numpy(), start[1] - 0.3 * grads[0][1] - 0.12 * (0.9 * grads[0][1] + grads[1][1]), rtol=1e-13
    )


# ---------------------------------------------------------------------------------------------
# Warm-up + cosine


def schedule_reference(t, peak, warmup, total, min_ratio):
    """lr of step t (0-based): (t + 1) / W peak during the warm-up (so the first step already has
    peak / W and step W - 1 the peak), then min + (1 - min)(1 + cos(pi (t - W) / (T - W))) / 2
    times peak, reaching min_ratio * peak at t = T and staying there."""
    if t < warmup:
        return peak * (t + 1) / warmup
    progress = min((t - warmup) / (total - warmup), 1.0)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _lrs(peak, warmup, total, min_ratio, steps):
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=peak)
    sched = warmup_cosine(opt, warmup, total, min_ratio)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])  # the lr this step trains with
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_warmup_cosine_closed_form_values(min_ratio):
    """peak 0.8, W = 4 warm-up steps, T = 12: checkpoints by hand, then every step vs the formula."""
    peak, warmup, total = 0.8, 4, 12
    lrs = _lrs(peak, warmup, total, min_ratio, total + 3)
    lo = min_ratio * peak
    assert lrs[0] == pytest.approx(0.2, rel=1e-12)  # warm-up start: peak / W
    assert lrs[1] == pytest.approx(0.4, rel=1e-12)  # warm-up middle: peak * 2 / 4
    assert lrs[3] == pytest.approx(0.8, rel=1e-12)  # warm-up end: the peak
    assert lrs[4] == pytest.approx(0.8, rel=1e-12)  # cosine start
    assert lrs[8] == pytest.approx(lo + (peak - lo) / 2, rel=1e-12)  # mid-cosine: halfway to the floor
    assert lrs[11] == pytest.approx(lo + (peak - lo) * (1 + math.cos(7 * math.pi / 8)) / 2, rel=1e-12)
    assert lrs[12] == pytest.approx(lo, abs=1e-15)  # the end: min_lr_ratio * peak
    assert lrs[14] == pytest.approx(lo, abs=1e-15)  # and it stays there
    for t, lr in enumerate(lrs):
        assert lr == pytest.approx(schedule_reference(t, peak, warmup, total, min_ratio), rel=1e-12, abs=1e-15)


def test_cosine_without_warmup_starts_at_the_peak():
    lrs = _lrs(1.0, 0, 10, 0.25, 11)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.25 + 0.75 / 2)
    assert lrs[10] == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------
# The weight-decay filter and the learning-rate scaling

NORMS = (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)


def exempt_by_module(model: nn.Module) -> set[str]:
    """The names the filter exempts, found by module type: every parameter of a norm layer, every
    bias, a ViT's position embedding and class token."""
    names = {
        f"{m_name}.{p_name}"
        for m_name, m in model.named_modules()
        if isinstance(m, NORMS)
        for p_name, _ in m.named_parameters(recurse=False)
    }
    names |= {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    names |= {"backbone.pos_embed", "backbone.cls_token"} & {n for n, _ in model.named_parameters()}
    return names


def group_names(model: nn.Module, groups: list[dict]) -> list[set[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [{name_of[id(p)] for p in g["params"]} for g in groups]


def built(*overrides):
    cfg = config.load(None, TINY + ["method.name=simclr", *overrides])
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def test_weight_decay_filter_enabled_for_a_vit_with_adamw_by_default():
    pytest.importorskip("timm", reason="timm is in the test extra: pip install -e '.[test]'")
    cfg, model = built(*TINY_VIT, "optim.name=adamw", "optim.weight_decay=0.05", "optim.lr=0.01")
    decayed, exempt = group_names(model, param_groups(cfg.optim, model))
    assert exempt == exempt_by_module(model)
    assert decayed == {n for n, p in model.named_parameters()} - exempt
    assert {"backbone.pos_embed", "backbone.cls_token", "backbone.norm.weight"} <= exempt
    # One AdamW step with zero gradients moves only by the decoupled decay p (1 - lr wd), and not the exempt.
    opt = build_optimizer(cfg.optim, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] * (1.0 if n in exempt else 1 - 0.01 * 0.05), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "overrides, filtered",
    [
        (["optim.name=adamw"], False),  # auto: a ResNet keeps one group
        (["optim.name=sgd", "optim.weight_decay_filter=enabled"], True),
        (["optim.name=adamw", "optim.weight_decay_filter=disabled"], False),
        (["optim.name=lars"], False),  # LARS: its own rule, inside its step
    ],
)
def test_weight_decay_filter_setting(overrides, filtered):
    cfg, model = built(*overrides)
    groups = group_names(model, param_groups(cfg.optim, model))
    everything = {n for n, _ in model.named_parameters()}
    assert groups == ([everything - exempt_by_module(model), exempt_by_module(model)] if filtered else [everything])


def test_lars_refuses_the_filter_and_auto_leaves_a_vit_with_sgd_unfiltered(tiny_cfg):
    with pytest.raises(ConfigError, match="optim.weight_decay_filter: enabled is not for optim.name=lars.*=auto"):
        tiny_cfg("optim.name=lars", "optim.weight_decay_filter=enabled")
    pytest.importorskip("timm", reason="timm is in the test extra: pip install -e '.[test]'")
    cfg, model = built(*TINY_VIT, "optim.name=sgd")
    assert len(param_groups(cfg.optim, model)) == 1


def test_linear_lr_scaling_is_base_lr_times_batch_over_256():
    model = nn.Linear(2, 2)
    assert build_optimizer(OptimConfig(lr=0.3), model, 512).param_groups[0]["lr"] == 0.3
    scaled = OptimConfig(lr=0.3, lr_scaling="linear")
    assert build_optimizer(scaled, model, 512).param_groups[0]["lr"] == pytest.approx(0.6, rel=1e-15)
    assert build_optimizer(scaled, model, 64).param_groups[0]["lr"] == pytest.approx(0.075, rel=1e-15)
    with pytest.raises(ValueError, match="pass batch_size"):
        build_optimizer(scaled, model)


def test_pretrain_prints_and_logs_the_scaled_lr(tiny_cfg, capsys):
    # 128 images, batch 64: two steps; the lr logged after step 1 is half the peak (cosine at 1/2).
    cfg = tiny_cfg("data.subset=128", "train.threads=1", "optim.lr=0.004", "optim.lr_scaling=linear")
    pretrain(cfg, Path(cfg.train.out_dir) / "run")
    assert "peak learning rate 0.001 = optim.lr 0.004 x train.batch_size 64 / 256" in capsys.readouterr().err
    logged = [r["lr"] for r in read_metrics(Path(cfg.train.out_dir) / "run") if "lr" in r]
    assert logged == pytest.approx([0.0005, 0.0])


def test_a_config_saved_before_the_filter_keeps_weight_decay_on_every_parameter(tiny_cfg):
    """Its checkpoints hold one parameter group: the filter is disabled for it, and resuming it
    with a config that says auto is a listed difference, never a silent change."""
    saved = config.to_dict(tiny_cfg("optim.name=adamw"))
    del saved["optim"]["weight_decay_filter"]
    assert config.from_saved(saved, SCHEMA).optim.weight_decay_filter == "disabled"
    diffs = config_differences(saved, tiny_cfg("optim.name=adamw"))
    assert diffs == [("optim.weight_decay_filter", "disabled", "auto")]
