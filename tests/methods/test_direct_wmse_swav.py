"""DirectCLR, DirectPred, DirectCopy, W-MSE and SwAV: each loss and predictor against an independent
computation (float64 loops, numpy), their gradients, and the method-level properties (what the
optimiser may touch, which dimensions get gradient, Sinkhorn marginals, whitened covariance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, numpy_sinkhorn
from sparsehead import config
from sparsehead.methods.directclr import subvector_dim
from sparsehead.methods.directcopy import directcopy_weight
from sparsehead.methods.directpred import directpred_weight
from sparsehead.methods.losses import directclr_loss, sinkhorn_knopp, swav_loss, whiten, wmse_loss
from sparsehead.runs.model import build_model
from sparsehead.training.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_method(name: str, *extra: str):
    torch.manual_seed(0)
    cfg = config.load(None, TINY + [f"method.name={name}", "train.batch_size=16", *extra])
    return build_model(cfg)


def views(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randn(n, 3, 16, 16, generator=g)


# --- DirectCLR ------------------------------------------------------------------------------------


def test_directclr_loss_matches_loops():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    tau = 0.1

    def nce(a, b):  # -log exp(a_i.b_i/tau) / sum_j exp(a_i.b_j/tau), cross-view only, mean over i
        a = [v / v.norm() for v in a]
        b = [v / v.norm() for v in b]
        total = 0.0
        for i in range(len(a)):
            logits = [float(a[i] @ b[j]) / tau for j in range(len(b))]
            total += -logits[i] + np.log(np.sum(np.exp(logits)))
        return total / len(a)

    expected = (nce(z1, z2) + nce(z2, z1)) / 2
    assert directclr_loss(z1, z2, tau).item() == pytest.approx(expected, rel=1e-10)

    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: directclr_loss(x, y, 0.5), (a, b))


def test_directclr_subvector_dim():
    assert subvector_dim(None, 2048) == 360  # the paper's ResNet-50 setting
    assert subvector_dim(None, 64) == 11  # 64 * 360 / 2048 = 11.25
    assert subvector_dim(None, 2) == 1  # at least one dimension
    assert subvector_dim(7, 64) == 7
    with pytest.raises(config.ConfigError, match="method.directclr_dim"):
        subvector_dim(65, 64)


def test_directclr_uses_only_the_first_dims():
    method = tiny_method("directclr", "sparsity.lam=0", "method.directclr_dim=5")
    captured = {}

    def keep(module, inputs, r):
        r.retain_grad()
        captured.setdefault("r", []).append(r)

    hook = method.backbone.register_forward_hook(keep)
    loss = method(*views()).loss
    loss.backward()
    hook.remove()
    for r in captured["r"]:
        assert r.shape[1] == 64 and torch.all(r.grad[:, 5:] == 0)
        assert r.grad[:, :5].abs().sum() > 0
    x = views()[0]
    method.eval()
    r, z = method.embed(x)
    assert torch.equal(z, r[:, :5]) and method.embedding_dim == 5


def test_directclr_refuses_sparsehead():
    with pytest.raises(config.ConfigError, match="sparsity.lam.*method.name=directclr"):
        config.load(None, ["method.name=directclr", "sparsity.lam=1e-4"])
    with pytest.raises(config.ConfigError, match="method.directclr_dim"):
        tiny_method("directclr", "sparsity.lam=0", "method.directclr_dim=65")  # width 8: 64-d r


# --- DirectPred / DirectCopy ---------------------------------------------------------------------


def random_psd(m, rank, seed):
    a = np.random.default_rng(seed).standard_normal((rank, m))
    return a.T @ a / rank


@pytest.mark.parametrize("rank, atol", [(12, 1e-10), (4, 1e-6)])  # full rank; and zero eigenvalues,
def test_directpred_weight_matches_numpy(rank, atol):  # whose round-off (+-1e-16) sqrt turns into 1e-8
    corr = random_psd(8, rank, seed=rank)
    s, u = np.linalg.eigh(corr)
    p = np.maximum(np.sqrt(np.maximum(s, 0) / s.max()) + 0.01, 1e-4)
    expected = u @ np.diag(p) @ u.T
    got = directpred_weight(torch.from_numpy(corr), eps=0.01).numpy()
    np.testing.assert_allclose(got, expected, atol=atol)


def test_directcopy_weight_matches_formula():
    corr = random_psd(6, 9, seed=3)
    frob = np.sqrt((corr**2).sum())
    got = directcopy_weight(torch.from_numpy(corr), eps=0.05).numpy()
    np.testing.assert_allclose(got, corr / frob + 0.05 * np.eye(6), atol=1e-12)
    raw = directcopy_weight(torch.from_numpy(corr), eps=0.05, normalize=False).numpy()
    np.testing.assert_allclose(raw, corr + 0.05 * np.eye(6), atol=1e-12)


@pytest.mark.parametrize("name", ["directpred", "directcopy"])
def test_set_predictor_is_never_touched_by_the_optimiser(name):
    method = tiny_method(name, "method.predictor_rho=0.3")
    method.train()
    assert not method.predictor.weight.requires_grad and method.predictor.bias is None
    optimizer = build_optimizer(config.OptimConfig(), method)
    assert all(p is not method.predictor.weight for g in optimizer.param_groups for p in g["params"])
    projections = []
    method.projector.register_forward_hook(lambda m, i, out: projections.append(out.detach().double()))

    def batch_corr(fs):  # mean(f f^T) over both views, by summing outer products
        f = torch.cat(fs)
        return sum(torch.outer(v, v) for v in f) / len(f)

    def set_weight(corr):
        if name == "directpred":
            return directpred_weight(corr, 0.01)
        return directcopy_weight(corr, 0.01)

    expected_corr = None
    for step in (1, 2):
        projections.clear()
        before = method.predictor.weight.clone()
        loss = method(*views(seed=step)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.equal(method.predictor.weight, before)  # the optimiser left it alone
        method.after_step(step, 10)
        c = batch_corr(projections)
        expected_corr = c if expected_corr is None else 0.3 * expected_corr + 0.7 * c
        torch.testing.assert_close(method.corr.double(), expected_corr, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(method.predictor.weight.double(), set_weight(expected_corr), atol=1e-4, rtol=1e-4)
    assert set(["corr", "corr_updates", "predictor.weight"]) <= set(method.state_dict())


def test_predictor_freq_sets_the_weight_only_every_n_steps():
    method = tiny_method("directpred", "method.predictor_freq=2")
    method.train()
    weights = []
    for step in (1, 2, 3):
        with torch.no_grad():
            method(*views(seed=step))
        method.after_step(step, 10)
        weights.append(method.predictor.weight.clone())
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    torch.testing.assert_close(weights[2], directpred_weight(method.corr, 0.01))


@pytest.mark.parametrize("name", ["directpred", "directcopy", "swav"])
def test_after_step_is_gated_on_the_device_verdict(name):
    """after_step with applied a device False (a skipped update) leaves F, its count, the predictor, the
    prototypes and the EMA target as they were; a device True does exactly what True does (the EMA
    aside: its gated form rounds otherwise, methods/momentum.py)."""
    states = []
    for applied in (True, torch.tensor(True), torch.tensor(False)):
        method = tiny_method(name)
        method.train()
        with torch.no_grad():
            method(*views())  # DirectPred's batch correlation
            if name == "swav":
                method.prototypes.weight.mul_(2)  # off the unit sphere, as an update leaves them
        before = {k: v.clone() for k, v in method.state_dict().items()}
        method.after_step(1, 10, applied)
        states.append({k: v.clone() for k, v in method.state_dict().items()})
    host, device, skipped = states
    ema = tuple(getattr(method, "MOMENTUM_COPIES", ()))
    assert all(torch.equal(host[k], device[k]) for k in host if not k.startswith(ema))
    assert all(torch.equal(before[k], skipped[k]) for k in before)
    moved = [k for k in host if not torch.equal(host[k], before[k])]
    assert set(moved) >= ({"prototypes.weight"} if name == "swav" else {"corr", "corr_updates", "predictor.weight"})


# --- W-MSE -----------------------------------------------------------------------------------------


def numpy_whiten(x):
    xc = x - x.mean(axis=0)
    chol = np.linalg.cholesky(np.cov(x, rowvar=False))  # unbiased covariance, as the paper's code
    return xc @ np.linalg.inv(chol).T


def test_whiten_matches_numpy_and_gives_identity_covariance():
    x = np.random.default_rng(0).standard_normal((40, 6)) @ np.diag([5.0, 2, 1, 0.5, 0.1, 3])
    got = whiten(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, numpy_whiten(x), atol=1e-10)
    np.testing.assert_allclose(np.cov(got, rowvar=False), np.eye(6), atol=1e-10)
    # shrinkage: the Cholesky factor is the one of (1 - eps) C + eps I
    shrunk = whiten(torch.from_numpy(x), eps=0.2).numpy()
    chol = np.linalg.cholesky(0.8 * np.cov(x, rowvar=False) + 0.2 * np.eye(6))
    np.testing.assert_allclose(shrunk, (x - x.mean(axis=0)) @ np.linalg.inv(chol).T, atol=1e-10)


def test_wmse_loss_matches_sub_batch_loop():
    rng = np.random.default_rng(1)
    z1, z2 = rng.standard_normal((24, 4)), rng.standard_normal((24, 4))
    got = wmse_loss(
        torch.from_numpy(z1), torch.from_numpy(z2), w_size=12, w_iter=2, generator=torch.Generator().manual_seed(5)
    ).item()
    g = torch.Generator().manual_seed(5)
    terms = []
    for _ in range(2):
        for idx in torch.randperm(24, generator=g).view(-1, 12).numpy():
            a, b = numpy_whiten(z1[idx]), numpy_whiten(z2[idx])
            cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            terms.extend(2 - 2 * cos)
    assert got == pytest.approx(np.mean(terms), rel=1e-10)

    a = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: wmse_loss(x, y, 4, generator=torch.Generator().manual_seed(0)), (a, b))


def test_wmse_whitening_size_checks():
    method = tiny_method("wmse", "head.out_dim=8")  # batch 16: whitened whole (w_size 128 > 16)
    assert method.whitening_size(16) == 16
    with pytest.raises(config.ConfigError, match="head.out_dim"):
        tiny_method("wmse", "head.out_dim=16").whitening_size(16)
    with pytest.raises(config.ConfigError, match="multiple"):
        tiny_method("wmse", "head.out_dim=8", "method.wmse_w_size=12").whitening_size(16)


# --- SwAV ------------------------------------------------------------------------------------------


def test_sinkhorn_matches_loops_and_marginals():
    scores = (
        F.normalize(torch.randn(10, 4, dtype=torch.float64), dim=1)
        @ F.normalize(torch.randn(7, 4, dtype=torch.float64), dim=1).T
    )  # (B=10, K=7) cosines
    q = sinkhorn_knopp(scores, 0.05, 3)
    np.testing.assert_allclose(q.numpy(), numpy_sinkhorn(scores.numpy(), 0.05, 3), rtol=1e-10)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(10, dtype=torch.float64))  # each sample: 1
    converged = sinkhorn_knopp(scores, 0.05, 500)
    torch.testing.assert_close(converged.sum(dim=1), torch.ones(10, dtype=torch.float64))
    torch.testing.assert_close(converged.sum(dim=0), torch.full((7,), 10 / 7, dtype=torch.float64))


def test_swav_loss_matches_formula_and_its_gradient():
    torch.manual_seed(0)
    s1 = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    s2 = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    tau = 0.1
    q1 = numpy_sinkhorn(s1.detach().numpy(), 0.05, 3)
    q2 = numpy_sinkhorn(s2.detach().numpy(), 0.05, 3)

    def log_softmax(s):
        s = s / tau
        return s - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True)) - s.max(1, keepdims=True)

    ce12 = -(q1 * log_softmax(s2.detach().numpy())).sum(1).mean()
    ce21 = -(q2 * log_softmax(s1.detach().numpy())).sum(1).mean()
    loss = swav_loss(s1, s2, tau, 0.05, 3)
    assert loss.item() == pytest.approx((ce12 + ce21) / 2, rel=1e-10)

    # Codes carry no gradient: d/ds2 = (softmax(s2/tau) - q1) / (tau B) / 2, rows of q summing to 1.
    loss.backward()
    p2 = np.exp(log_softmax(s2.detach().numpy()))
    np.testing.assert_allclose(s2.grad.numpy(), (p2 - q1) / (tau * 8) / 2, atol=1e-12)


def test_swav_prototypes_stay_on_the_unit_sphere():
    method = tiny_method("swav", "method.swav_prototypes=20")
    optimizer = build_optimizer(config.OptimConfig(), method)
    norms = method.prototypes.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(20))
    loss = method(*views()).loss
    loss.backward()
    optimizer.step()
    assert not torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(20))
    method.after_step(1, 10)
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(20))
