"""The three foundation losses against independent computations, gradients included."""

import itertools
import math

import numpy as np
import pytest
import torch

from sparsehead.methods.losses import barlow_twins_loss, byol_loss, nt_xent


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """Naive loops over the 2N anchors and their 2N - 1 candidates (SPEC section 2)."""
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        positive = (i + n) % n2
        denom = sum(math.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(z[i] @ z[positive] / tau) / denom)
    return total / n2


def barlow_reference(z1: np.ndarray, z2: np.ndarray, lam: float) -> float:
    """Explicit BatchNorm-without-affine (biased variance, eps 1e-5) and cross-correlation sums."""
    a = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + 1e-5)
    b = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + 1e-5)
    n, d = a.shape
    loss = 0.0
    for i, j in itertools.product(range(d), range(d)):
        c = sum(a[k, i] * b[k, j] for k in range(n)) / n
        loss += (1 - c) ** 2 if i == j else lam * c**2
    return loss


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_nt_xent_matches_loops(tau):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    assert nt_xent(z1, z2, tau).item() == pytest.approx(nt_xent_reference(z1.numpy(), z2.numpy(), tau), rel=1e-10)


def test_nt_xent_is_a_batch_mean_and_prefers_aligned_views():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(32, 8, generator=g, dtype=torch.float64)
    aligned = nt_xent(z, z + 0.01 * torch.randn(32, 8, generator=g, dtype=torch.float64), 0.5)
    shuffled = nt_xent(z, z[torch.randperm(32, generator=g)], 0.5)
    assert aligned < shuffled
    # A mean: duplicating the batch leaves the per-anchor average comparable, not doubled.
    assert nt_xent(z.repeat(2, 1), z.repeat(2, 1), 0.5) < 2 * nt_xent(z, z, 0.5)


def test_byol_loss_matches_cosine():
    g = torch.Generator().manual_seed(2)
    p, z = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    pn, zn = p.numpy(), z.numpy()
    cos = (pn * zn).sum(1) / (np.linalg.norm(pn, axis=1) * np.linalg.norm(zn, axis=1))
    assert byol_loss(p, z).item() == pytest.approx(np.mean(2 - 2 * cos), rel=1e-12)


def test_byol_loss_stops_gradient_into_target():
    p = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    byol_loss(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_barlow_twins_matches_explicit_sums():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.randn(9, 4, generator=g, dtype=torch.float64)
    ref = barlow_reference(z1.numpy(), z2.numpy(), 0.0051)
    assert barlow_twins_loss(z1, z2, 0.0051).item() == pytest.approx(ref, rel=1e-10)


def test_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(4)

    def make(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)

    z1, z2 = make(5, 3), make(5, 3)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.5), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins_loss(a, b, 0.0051), (z1, z2))
    assert torch.autograd.gradcheck(lambda a: byol_loss(a, z2.detach()), (z1,))
