"""SimSiam, VICReg, MoCo v2/v3 and Huang et al.'s revised InfoNCE: each loss against naive float64
loops, gradients by gradcheck, the MoCo queue's ring semantics, key encoders moved only by EMA,
SimSiam's stop-gradient (their DDP equivalence: test_distributed.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from conftest import TINY, method_keys
from sparsehead import config
from sparsehead.methods.losses import huang_infonce, moco_loss, moco_v3_loss, simsiam_loss, vicreg_loss
from sparsehead.methods.moco_v2 import KeyQueue
from sparsehead.methods.momentum import cosine_momentum
from sparsehead.runs.model import build_model
from sparsehead.sparsity import SparseHeadRegularizer
from sparsehead.training.optim import build_optimizer


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(sum(x * x for x in v))


# ----------------------------------------------------------------------------------------------
# Independent references: explicit loops over samples and dimensions, float64.


def simsiam_reference(p1, p2, z1, z2) -> float:
    n = len(p1)
    cos = lambda a, b: float(unit(a) @ unit(b))  # noqa: E731
    return -0.5 * (sum(cos(p1[i], z2[i]) for i in range(n)) / n + sum(cos(p2[i], z1[i]) for i in range(n)) / n)


def vicreg_reference(a, b, sim, std, cov) -> float:
    n, d = a.shape
    invariance = sum((a[i, j] - b[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def variance(x):
        total = 0.0
        for j in range(d):
            mean = sum(x[:, j]) / n
            var = sum((x[i, j] - mean) ** 2 for i in range(n)) / (n - 1)
            total += max(0.0, 1 - math.sqrt(var + 1e-4))
        return total / d

    def covariance(x):
        mean = [sum(x[:, j]) / n for j in range(d)]
        total = 0.0
        for i, j in itertools.product(range(d), range(d)):
            if i != j:
                c = sum((x[k, i] - mean[i]) * (x[k, j] - mean[j]) for k in range(n)) / (n - 1)
                total += c**2
        return total / d

    return sim * invariance + std * (variance(a) + variance(b)) / 2 + cov * (covariance(a) + covariance(b))


def moco_reference(q, k, queue, tau) -> float:
    total = 0.0
    for i in range(len(q)):
        qi, ki = unit(q[i]), unit(k[i])
        positive = math.exp(qi @ ki / tau)
        negatives = sum(math.exp(qi @ queue[j] / tau) for j in range(len(queue)))
        total += -math.log(positive / (positive + negatives))
    return total / len(q)


def moco_v3_reference(q, k, tau) -> float:
    n = len(q)
    total = 0.0
    for i in range(n):
        qi = unit(q[i])
        denom = sum(math.exp(qi @ unit(k[j]) / tau) for j in range(n))
        total += -math.log(math.exp(qi @ unit(k[i]) / tau) / denom)
    return total / n * 2 * tau


def huang_reference(z1, z2, tau, lam) -> float:
    """||f(x1) - f(x2)||^2 + lambda * log sum over the views of the OTHER images, both views anchors."""
    n = len(z1)
    views = [unit(v) for v in np.concatenate([z1, z2])]
    alignment = sum(float(((views[i] - views[i + n]) ** 2).sum()) for i in range(n)) / n
    spread = 0.0
    for a in range(2 * n):
        spread += math.log(sum(math.exp(views[a] @ views[c] / tau) for c in range(2 * n) if c % n != a % n))
    return alignment + lam * spread / (2 * n)


# ----------------------------------------------------------------------------------------------
# Losses: values and gradients.


def test_simsiam_loss_matches_cosines_and_its_gradient():
    p1, p2, z1, z2 = (randn(6, 5, seed=s) for s in range(4))
    got = simsiam_loss(p1, p2, z1, z2).item()
    assert got == pytest.approx(simsiam_reference(*(t.numpy() for t in (p1, p2, z1, z2))), rel=1e-12)
    p1.requires_grad_(), p2.requires_grad_()
    assert gradcheck(lambda a, b: simsiam_loss(a, b, z1, z2), (p1, p2))


def test_simsiam_loss_stops_the_gradient_to_the_targets():
    p1, p2, z1, z2 = (randn(6, 5, seed=s).requires_grad_() for s in range(4))
    simsiam_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (1.0, 3.0, 0.5)])
def test_vicreg_loss_matches_loops(coeffs):
    # Column scales below and above 1: the std hinge is active on some dimensions only.
    scale = torch.tensor([0.2, 0.5, 1.5, 3.0], dtype=torch.float64)
    z1, z2 = randn(7, 4, seed=1) * scale, randn(7, 4, seed=2) * scale
    got = vicreg_loss(z1, z2, *coeffs).item()
    assert got == pytest.approx(vicreg_reference(z1.numpy(), z2.numpy(), *coeffs), rel=1e-10)


def test_vicreg_loss_gradient():
    scale = torch.tensor([0.2, 0.5, 1.5, 3.0], dtype=torch.float64)
    z1 = (randn(6, 4, seed=3) * scale).requires_grad_()
    z2 = (randn(6, 4, seed=4) * scale).requires_grad_()
    assert gradcheck(lambda a, b: vicreg_loss(a, b), (z1, z2))


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_moco_loss_matches_loops_and_its_gradient(tau):
    q, k = randn(5, 4, seed=5), randn(5, 4, seed=6)
    queue = F.normalize(randn(9, 4, seed=7), dim=1)
    got = moco_loss(q, k, queue, tau).item()
    assert got == pytest.approx(moco_reference(q.numpy(), k.numpy(), queue.numpy(), tau), rel=1e-10)
    assert gradcheck(lambda a: moco_loss(a, k, queue, tau), (q.requires_grad_(),))


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_moco_v3_loss_matches_loops_and_its_gradient(tau):
    q, k = randn(6, 4, seed=8), randn(6, 4, seed=9)
    assert moco_v3_loss(q, k, tau).item() == pytest.approx(moco_v3_reference(q.numpy(), k.numpy(), tau), rel=1e-10)
    assert gradcheck(lambda a: moco_v3_loss(a, k, tau), (q.requires_grad_(),))
    k.requires_grad_()
    moco_v3_loss(q, k, tau).backward()
    assert k.grad is None  # keys come from the momentum encoder: no gradient


@pytest.mark.parametrize("tau,lam", [(0.2, 1.0), (0.5, 0.3)])
def test_huang_infonce_matches_loops_and_its_gradient(tau, lam):
    z1, z2 = randn(5, 4, seed=10), randn(5, 4, seed=11)
    got = huang_infonce(z1, z2, tau, lam).item()
    assert got == pytest.approx(huang_reference(z1.numpy(), z2.numpy(), tau, lam), rel=1e-10)
    assert gradcheck(lambda a, b: huang_infonce(a, b, tau, lam), (z1.requires_grad_(), z2.requires_grad_()))


# ----------------------------------------------------------------------------------------------
# The MoCo queue.


def test_queue_enqueues_in_order_wraps_around_and_moves_its_pointer():
    queue = KeyQueue(5, 3)
    start = queue.keys.clone()
    a, b, c = torch.arange(6.0).view(2, 3), 10 + torch.arange(6.0).view(2, 3), 20 + torch.arange(9.0).view(3, 3)
    queue.enqueue(a)
    assert torch.equal(queue.keys[:2], a) and torch.equal(queue.keys[2:], start[2:]) and queue.ptr.item() == 2
    queue.enqueue(b)
    assert torch.equal(queue.keys[2:4], b) and queue.ptr.item() == 4
    queue.enqueue(c)  # fills slot 4, then wraps to slots 0 and 1
    assert torch.equal(queue.keys[4], c[0]) and torch.equal(queue.keys[:2], c[1:])
    assert torch.equal(queue.keys[2:4], b) and queue.ptr.item() == 2
    with pytest.raises(ValueError, match="do not fit"):
        queue.enqueue(torch.zeros(6, 3))
    assert set(queue.state_dict()) == {"keys", "ptr"}  # checkpointed with the model


def test_queue_starts_with_unit_keys():
    assert torch.allclose(KeyQueue(7, 4).keys.norm(dim=1), torch.ones(7))


def tiny_method(tmp_path, name, *extra):
    torch.manual_seed(0)
    cfg = config.load(
        None,
        TINY
        + [
            f"method.name={name}",
            *method_keys(name, "method.predictor_hidden_dim=16", "method.queue_size=20"),
            "train.batch_size=8",
            "sparsity.lam=1e-4",
            f"train.out_dir={tmp_path}",
            *extra,
        ],
    )
    return cfg, build_model(cfg)


@pytest.mark.parametrize("symmetric", [False, True])
def test_moco_v2_enqueues_the_normalised_keys_of_the_key_encoder(tmp_path, symmetric):
    cfg, method = tiny_method(tmp_path, "moco_v2", f"method.moco_symmetric={str(symmetric).lower()}")
    x1, x2 = randn(8, 3, 16, 16, seed=12).float(), randn(8, 3, 16, 16, seed=13).float()
    method.train()
    method(x1, x2)
    with torch.no_grad():
        key = lambda x: F.normalize(method.key_projector(method.key_backbone(x)), dim=1)  # noqa: E731
        expected = torch.cat([key(x1), key(x2)]) if symmetric else key(x2)
    assert torch.allclose(method.queue.keys[: len(expected)], expected, atol=1e-6)
    assert method.queue.ptr.item() == len(expected)
    method.eval()
    method(x1, x2)  # an evaluation pass leaves the queue alone
    assert method.queue.ptr.item() == len(expected)


# ----------------------------------------------------------------------------------------------
# Key encoders move only by EMA; SparseHead sees the online projector only.


@pytest.mark.parametrize("name", ["moco_v2", "moco_v3"])
def test_key_encoder_is_moved_only_by_ema(tmp_path, name):
    cfg, method = tiny_method(tmp_path, name, "optim.lr=0.1")
    keys = {n: p for n, p in method.named_parameters() if n.startswith("key_")}
    online = dict(method.named_parameters())
    assert keys and all(not p.requires_grad for p in keys.values())
    optimizer = build_optimizer(cfg.optim, method)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in keys.values()}

    before = {n: p.detach().clone() for n, p in keys.items()}
    loss = method(randn(8, 3, 16, 16, seed=14).float(), randn(8, 3, 16, 16, seed=15).float()).loss
    loss.backward()
    optimizer.step()
    assert all(torch.equal(p, before[n]) for n, p in keys.items())  # the optimiser does not move them

    step, total = 3, 10
    method.after_step(step, total)
    m = cfg.method.momentum if name == "moco_v2" else cosine_momentum(cfg.method.momentum, step, total)
    assert m == (0.999 if name == "moco_v2" else pytest.approx(1 - 0.01 * (math.cos(math.pi * 0.3) + 1) / 2))
    for n, p in keys.items():
        twin = online[n.replace("key_", "", 1)]
        assert torch.allclose(p, m * before[n] + (1 - m) * twin.detach(), atol=1e-7), n
    assert any(not torch.equal(p, before[n]) for n, p in keys.items())


@pytest.mark.parametrize("name", ["simsiam", "vicreg", "moco_v2", "moco_v3"])
def test_sparse_head_is_the_online_projector_only(tmp_path, name):
    cfg, method = tiny_method(tmp_path, name)
    head = method.sparse_head()
    assert head is method.projector
    others = {id(p) for n, p in method.named_parameters() if not n.startswith("projector.")}
    assert not {id(p) for p in head.parameters()} & others
    assert SparseHeadRegularizer(cfg.sparsity, head).penalty().item() > 0


def test_simsiam_projector_last_batchnorm_has_no_affine_and_takes_sparsehead(tmp_path):
    cfg, method = tiny_method(tmp_path, "simsiam", "head.num_layers=3", "head.last_bn=true")
    linears = [m for m in method.projector if isinstance(m, torch.nn.Linear)]
    last = method.projector[-1]
    assert len(linears) == 3 and isinstance(last, torch.nn.BatchNorm1d) and not last.affine
    assert SparseHeadRegularizer(cfg.sparsity, method.sparse_head()).penalty().item() > 0


def test_simsiam_gradient_reaches_the_network_only_through_the_predictor(tmp_path):
    """Gradients equal those of the loss written with explicitly detached targets, and differ from
    the loss without the stop-gradient (so the check can fail)."""
    cfg, method = tiny_method(tmp_path, "simsiam")
    x1, x2 = randn(8, 3, 16, 16, seed=16).float(), randn(8, 3, 16, 16, seed=17).float()
    params = [p for p in method.parameters() if p.requires_grad]

    def grads(stop: bool):
        z1, z2 = method.projector(method.backbone(x1)), method.projector(method.backbone(x2))
        p1, p2 = method.predictor(z1), method.predictor(z2)
        t1, t2 = (z1.detach(), z2.detach()) if stop else (z1, z2)
        loss = -0.5 * (F.cosine_similarity(p1, t2).mean() + F.cosine_similarity(p2, t1).mean())
        return torch.autograd.grad(loss, params)

    got = torch.autograd.grad(method(x1, x2)[0], params)
    stopped, unstopped = grads(True), grads(False)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, stopped))
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, unstopped))


# ----------------------------------------------------------------------------------------------
# Configuration errors.


def test_config_rejects_misplaced_loss_and_bad_queue(tmp_path):
    with pytest.raises(config.ConfigError, match="method.loss"):
        config.load(None, ["method.name=byol", "method.loss=huang"])
    with pytest.raises(config.ConfigError, match="method.queue_size"):
        config.load(None, ["method.name=moco_v2", "train.batch_size=256", "method.queue_size=200"])
    with pytest.raises(config.ConfigError, match="method.queue_size"):
        config.load(
            None, ["method.name=moco_v2", "train.batch_size=256", "method.queue_size=300", "method.moco_symmetric=true"]
        )
    with pytest.raises(config.ConfigError, match="method.queue_size"):
        config.load(None, ["method.name=moco_v2", "train.batch_size=64", "method.queue_size=512", "data.subset=500"])
    cfg = config.load(None, ["method.name=moco_v2", "train.batch_size=64", "method.queue_size=100"])
    assert cfg.method.temperature == 0.2 and cfg.method.momentum == 0.999


def test_a_queue_spanning_the_whole_data_set_stops_before_training(tmp_path):
    """digits has 1,437 training images: the default queue of 4,096 would hold each image's own
    older keys as negatives. The loop refuses it once the data set is loaded, before any step."""
    from sparsehead.training.loop import pretrain
    from sparsehead.training.setup import TrainingError

    cfg = config.load(None, TINY + ["method.name=moco_v2", f"train.out_dir={tmp_path}", "train.run_name=q"])
    with pytest.raises(TrainingError, match="method.queue_size: 4096 keys span all 1437"):
        pretrain(cfg)
    assert not list((tmp_path / "q" / "checkpoints").glob("ckpt-*.pt"))
