"""Our losses against lightly's implementations (issue 12: independent reference implementations).

tests/methods/test_losses.py and the method tests compare each loss with float64 loops written from OUR
reading of the papers: they catch vectorisation bugs, not misreadings. lightly (1.6.0) is an
independent implementation of the same papers, so agreement here checks the reading itself.
Every input is float64 (both libraries allow it) and the tolerances are near machine precision.

Conventions read from lightly's source (lightly/loss/*.py, lightly/models/modules/memory_bank.py);
each difference is stated at its test and in docs/methods.md ("Checked against lightly"):
- argument names and defaults differ (Barlow Twins lambda 5e-3 vs our 0.0051; Sinkhorn's
  (iterations, epsilon) order); the tests pass the same values explicitly;
- lightly's losses gather across processes only with gather_distributed=True (default False);
  ours always gather. One process is compared here; the DDP conventions are stated per loss.
"""

import math

import pytest
import torch
import torch.nn.functional as F

lightly_loss = pytest.importorskip(
    "lightly.loss",
    reason="lightly is not installed (it is in the `test` extra: pip install -e '.[test]'); "
    "these tests compare our losses with its independent implementations",
)
from lightly.loss import (  # noqa: E402
    BarlowTwinsLoss,
    DCLLoss,
    DirectCLRLoss,
    NegativeCosineSimilarity,
    NTXentLoss,
    SwaVLoss,
    VICRegLoss,
    WMSELoss,
)
from lightly.loss.barlow_twins_loss import _normalize as lightly_batch_standardize  # noqa: E402
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn  # noqa: E402

from sparsehead.methods.losses import (  # noqa: E402
    barlow_twins_loss,
    byol_loss,
    directclr_loss,
    huang_infonce,
    moco_loss,
    nt_xent,
    simsiam_loss,
    sinkhorn_knopp,
    swav_loss,
    vicreg_loss,
    wmse_loss,
)
from sparsehead.methods.moco_v2 import KeyQueue  # noqa: E402

TIGHT = dict(rtol=1e-12, atol=1e-12)


def rand(*shape, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64) + shift).requires_grad_()


def grads(loss, *inputs):
    """Input gradients (zeros where the loss does not depend on an input, e.g. a stop-gradient)."""
    gs = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, gs)]


def assert_close(a, b, **tol):
    torch.testing.assert_close(a, b, **(tol or TIGHT))


# ---------------------------------------------------------------------------------------------
# SimCLR


@pytest.mark.parametrize("tau", [0.5, 0.2, 0.1])
def test_nt_xent_equals_lightly_ntxent(tau):
    """Same convention: both normalise, each of the 2N views is an anchor against the 2N - 1 others
    (its own view masked), CE to the other view of its image, mean over the 2N anchors. lightly
    orders the logit columns differently (cross-view block first), which CE does not see."""
    z1, z2 = rand(8, 5, seed=0), rand(8, 5, seed=1)
    ours, ref = nt_xent(z1, z2, tau), NTXentLoss(temperature=tau)(z1, z2)
    assert_close(ours, ref)
    assert_close(grads(ours, z1, z2), grads(ref, z1, z2))


# ---------------------------------------------------------------------------------------------
# BYOL, SimSiam: lightly's NegativeCosineSimilarity (NCS) = -mean cos(x0, x1)


def test_byol_loss_is_an_affine_map_of_lightly_negative_cosine():
    """byol_loss(p, z) = 2 + 2 NCS(p, z) (mean of 2 - 2 cos). Our symmetrised BYOL loss,
    byol_loss(p1, z2) + byol_loss(p2, z1), is 4 + 4 x lightly's BYOL example loss
    0.5 (NCS(p1, z2) + NCS(p2, z1)). lightly does not stop the gradient (its examples detach the
    target themselves); ours detaches z, so only the gradient with respect to p is compared."""
    ncs = NegativeCosineSimilarity()
    p1, p2, z1, z2 = (rand(6, 4, seed=s) for s in range(4))
    ours, ref = byol_loss(p1, z2), ncs(p1, z2)
    assert_close(ours, 2 + 2 * ref)
    (g_ours_p, g_ours_z), (g_ref_p, g_ref_z) = grads(ours, p1, z2), grads(ref, p1, z2)
    assert_close(g_ours_p, 2 * g_ref_p)
    assert torch.all(g_ours_z == 0) and g_ref_z.abs().sum() > 0  # our stop-gradient; lightly has none
    symmetric = byol_loss(p1, z2) + byol_loss(p2, z1)
    assert_close(symmetric, 4 + 4 * 0.5 * (ncs(p1, z2.detach()) + ncs(p2, z1.detach())))


def test_simsiam_loss_equals_lightly_negative_cosine_symmetrised():
    """simsiam_loss = 0.5 (NCS(p1, sg z2) + NCS(p2, sg z1)): exactly lightly's SimSiam example with
    the targets detached (lightly's NCS itself has no stop-gradient)."""
    ncs = NegativeCosineSimilarity()
    p1, p2, z1, z2 = (rand(6, 4, seed=10 + s) for s in range(4))
    ours = simsiam_loss(p1, p2, z1, z2)
    ref = 0.5 * (ncs(p1, z2.detach()) + ncs(p2, z1.detach()))
    assert_close(ours, ref)
    assert_close(grads(ours, p1, p2, z1, z2), grads(ref, p1, p2, z1, z2))


# ---------------------------------------------------------------------------------------------
# Barlow Twins


@pytest.mark.parametrize("lam", [0.0051, 5e-3, 0.1])
def test_barlow_twins_equals_lightly_in_one_process(lam):
    """Same formula in one process: BatchNorm without affine (biased variance, eps 1e-5),
    c = a^T b / N, sum (1 - c_ii)^2 + lambda sum_{i != j} c_ij^2. lightly's default lambda_param
    is 5e-3, ours 0.0051 (the paper's): passed explicitly here. Shifted, scaled inputs so the
    standardisation matters."""
    z1, z2 = rand(10, 6, seed=20, scale=3.0, shift=2.0), rand(10, 6, seed=21, scale=0.5, shift=-1.0)
    ours, ref = barlow_twins_loss(z1, z2, lam), BarlowTwinsLoss(lambda_param=lam)(z1, z2)
    assert_close(ours, ref)
    assert_close(grads(ours, z1, z2), grads(ref, z1, z2))


def test_barlow_twins_ddp_convention_differs_from_lightly():
    """Convention difference under DDP. Ours (and the official code, whose BatchNorm is a
    SyncBatchNorm) standardises with the mean and variance of the GLOBAL batch and sums a^T b over
    processes / N_global: the loss on the concatenated batch (tests/core/test_distributed.py). lightly's
    gather_distributed=True standardises each process's batch with its OWN statistics and averages
    the per-process correlation matrices (all_reduce(c / world_size)). Emulated here for two
    processes with lightly's own standardisation: the two agree only when every shard has the
    same batch statistics."""
    z1, z2 = rand(12, 4, seed=22), rand(12, 4, seed=23)
    shift = torch.cat([torch.zeros(6, 4), torch.ones(6, 4)]).double()  # shards with different means
    a, b = z1.detach() + shift, z2.detach() + 0.5 * shift
    lam = 0.0051

    def loss_from(c):
        diag = torch.diagonal(c)
        return (1 - diag).pow(2).sum() + lam * (c.pow(2).sum() - diag.pow(2).sum())

    c_lightly_ddp = (
        sum(
            lightly_batch_standardize(a[s]).T @ lightly_batch_standardize(b[s]) / 6 for s in (slice(0, 6), slice(6, 12))
        )
        / 2
    )
    ours_global = barlow_twins_loss(a, b, lam)  # = ours under DDP on two shards of 6
    assert_close(ours_global, BarlowTwinsLoss(lambda_param=lam)(a, b))  # lightly on one process
    assert not torch.isclose(ours_global, loss_from(c_lightly_ddp), rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# VICReg


@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (1.0, 2.0, 3.0)])
def test_vicreg_equals_lightly(coeffs):
    """Same convention (both follow the official code): mse invariance, mean relu(1 - sqrt(var +
    1e-4)) with unbiased variance, halved sum over the two views, off-diagonal covariance (N - 1)
    squared / D summed over the views. Names: lightly lambda/mu/nu = our sim/std/cov coefficients.
    DDP: the same as ours with gather_distributed=True (invariance per process, variance and
    covariance on the embeddings gathered with gradient). Small scale so the variance hinge is
    active for some features."""
    sim, std, cov = coeffs
    z1, z2 = rand(9, 5, seed=30, scale=0.7), rand(9, 5, seed=31, scale=1.3)
    ours = vicreg_loss(z1, z2, sim, std, cov)
    ref = VICRegLoss(lambda_param=sim, mu_param=std, nu_param=cov)(z1, z2)
    assert_close(ours, ref)
    assert_close(grads(ours, z1, z2), grads(ref, z1, z2))


# ---------------------------------------------------------------------------------------------
# SwAV


@pytest.mark.parametrize("dtype,tol", [(torch.float64, TIGHT), (torch.float32, dict(rtol=1e-5, atol=1e-6))])
@pytest.mark.parametrize("epsilon,iterations", [(0.05, 3), (0.1, 10)])
def test_sinkhorn_knopp_equals_lightly_sinkhorn(dtype, tol, epsilon, iterations):
    """Same codes. Differences that do not change them: lightly's signature is (out, iterations,
    epsilon), ours (scores, epsilon, iterations); lightly's row step omits the official `/ K`
    (a constant factor the following column normalisation removes); ours runs in float64 inside
    (exp(1 / eps) of scores near 1 is large for float32), lightly in the input's dtype. DDP: both
    sum over the global batch (lightly with gather_distributed=True)."""
    g = torch.Generator().manual_seed(40)
    scores = (
        F.normalize(torch.randn(12, 6, generator=g, dtype=torch.float64), dim=1)
        @ F.normalize(torch.randn(7, 6, generator=g, dtype=torch.float64), dim=1).T
    )  # cosines, as SwAV
    scores = scores.to(dtype)
    ours = sinkhorn_knopp(scores, epsilon, iterations)
    ref = lightly_sinkhorn(scores.clone(), iterations=iterations, epsilon=epsilon)
    assert ours.dtype == ref.dtype == dtype
    assert_close(ours, ref, **tol)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_swav_loss_equals_lightly_with_two_crops(temperature):
    """lightly's SwaVLoss([s1, s2], []) with two high-resolution crops and no queue is our
    (CE(q1, s2) + CE(q2, s1)) / 2: codes without gradient, softmax(scores / temperature), mean over
    the batch and the two directions. lightly returns a shape-(1,) tensor."""
    g = torch.Generator().manual_seed(41)
    protos = F.normalize(torch.randn(7, 6, generator=g, dtype=torch.float64), dim=1)
    s1 = (F.normalize(torch.randn(12, 6, generator=g, dtype=torch.float64), dim=1) @ protos.T).requires_grad_()
    s2 = (F.normalize(torch.randn(12, 6, generator=g, dtype=torch.float64), dim=1) @ protos.T).requires_grad_()
    ours = swav_loss(s1, s2, temperature, 0.05, 3)
    ref = SwaVLoss(temperature=temperature, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)([s1, s2], []).squeeze(0)
    assert_close(ours, ref)
    assert_close(grads(ours, s1, s2), grads(ref, s1, s2))


# ---------------------------------------------------------------------------------------------
# MoCo v2 with a memory bank


def _moco_steps(queue_size, batch, steps, dim=5, tau=0.2):
    """Run our moco_loss + KeyQueue and lightly's NTXentLoss(memory_bank_size=(K, d)) side by side
    from the same bank; returns per step (our loss, lightly's, our dq, lightly's dq) and the banks."""
    queue = KeyQueue(queue_size, dim).double()
    ref_fn = NTXentLoss(temperature=tau, memory_bank_size=(queue_size, dim))
    ref_fn.memory_bank.bank = queue.keys.clone()  # the same starting bank (lightly: unit rows too)
    out = []
    for step in range(steps):
        q, k = rand(batch, dim, seed=100 + step), rand(batch, dim, seed=200 + step).detach()
        ours = moco_loss(q, k, queue.keys.clone(), tau)
        queue.enqueue(F.normalize(k, dim=1))  # the method enqueues the normalised keys after the loss
        ref = ref_fn(q, k)  # negatives = the bank before this batch; then enqueues normalised k
        out.append((ours, ref, *grads(ours, q), *grads(ref, q)))
    return out, queue, ref_fn.memory_bank


def test_moco_loss_with_queue_equals_lightly_memory_bank():
    """lightly's NTXentLoss with a memory bank is MoCo's InfoNCE: logits [q.k+, q.bank] / tau,
    label 0, mean over the batch; the bank holds normalised keys, is read before the batch's keys
    are enqueued, and is a FIFO. With K a multiple of the batch (as the official MoCo asserts) the
    losses, the gradients and the banks agree over several steps, through wrap-arounds. lightly
    keeps the positive's gradient to k (MoCo's keys come without one); ours detaches k."""
    steps, queue, bank = _moco_steps(queue_size=12, batch=4, steps=5)
    for ours, ref, g_ours, g_ref in steps:
        assert_close(ours, ref)
        assert_close(g_ours, g_ref)
    assert_close(queue.keys, bank.bank)
    assert int(queue.ptr) == int(bank.bank_ptr) == (5 * 4) % 12


def test_moco_queue_wrap_differs_from_lightly_when_k_is_not_a_multiple_of_the_batch():
    """Convention difference: when a batch runs past the end of the bank, lightly writes only the
    part that fits and restarts at 0, dropping the rest (and the oldest keys at the front stay one
    round longer); our KeyQueue wraps around and overwrites the front with the rest (K need not be
    a multiple of the global batch, docs/methods.md). Identical until the first wrap."""
    steps, queue, bank = _moco_steps(queue_size=10, batch=4, steps=3)
    for ours, ref, _, _ in steps:  # losses read the bank before the wrapping enqueue: still equal
        assert_close(ours, ref)
    assert_close(queue.keys[2:], bank.bank[2:])  # the first 8 + the 2 that fit
    assert not torch.allclose(queue.keys[:2], bank.bank[:2])  # ours: the last 2 keys of batch 3
    assert int(queue.ptr) == 2 and int(bank.bank_ptr) == 0


# ---------------------------------------------------------------------------------------------
# DCL (we have no DCL; Huang et al.'s revised InfoNCE has the same negatives)


def _mean_cos(z1, z2):
    return F.cosine_similarity(z1, z2, dim=1).mean()


@pytest.mark.parametrize("tau,lam", [(0.5, 1.0), (0.2, 0.4), (0.2, 1.0), (0.1, 0.7)])
def test_huang_infonce_is_lightly_dcl_plus_an_alignment_term(tau, lam):
    """sparsehead has no DCL loss, but huang_infonce has exactly DCL's negatives: for each anchor,
    both views of every OTHER image (its own view and its positive excluded), logsumexp over them,
    mean over the 2N anchors. DCL's positive term is -cos / tau; Huang's is ||f1 - f2||^2 =
    2 - 2 cos. Hence huang(tau, lam) = lam DCL(tau) + 2 + (lam / tau - 2) mean cos, and for
    lam = 2 tau: huang = 2 + 2 tau DCL (loss and gradients). lightly's DCL has no weighting here
    (weight_fn=None; DCLW is the weighted one)."""
    z1, z2 = rand(8, 5, seed=50), rand(8, 5, seed=51)
    ours, dcl = huang_infonce(z1, z2, tau, lam), DCLLoss(temperature=tau)(z1, z2)
    assert_close(ours, lam * dcl + 2 + (lam / tau - 2) * _mean_cos(z1, z2))
    if math.isclose(lam, 2 * tau):
        assert_close(grads(ours, z1, z2), [2 * tau * g for g in grads(dcl, z1, z2)])


def test_directclr_differs_from_lightly_directclr_loss_by_the_same_view_negatives():
    """lightly's DirectCLRLoss(loss_dim=d0) is NT-Xent on r[:, :d0] (slice, then normalise, as
    ours): its logits include the same-view negatives. Ours follows the official DirectCLR code:
    (nce(z1, z2) + nce(z2, z1)) / 2 with only cross-view logits. So lightly's equals our nt_xent on
    the slice, not our directclr_loss (which is lower: fewer terms in each denominator)."""
    r1, r2, d0, tau = rand(8, 12, seed=60), rand(8, 12, seed=61), 5, 0.1
    ref = DirectCLRLoss(loss_dim=d0, temperature=tau)(r1, r2)
    assert_close(nt_xent(r1[:, :d0], r2[:, :d0], tau), ref)
    ours = directclr_loss(r1[:, :d0], r2[:, :d0], tau)
    assert ours < ref - 1e-3


# ---------------------------------------------------------------------------------------------
# W-MSE


@pytest.mark.parametrize("w_iter,eps", [(1, 0.0), (2, 0.1)])
def test_wmse_equals_lightly(w_iter, eps):
    """lightly's WMSELoss (from the official htdt/self-supervised code) on torch.cat([z1, z2]):
    w_iter random splits into sub-batches of w_size, Cholesky whitening of each view of each
    sub-batch ((1 - eps) cov + eps I, unbiased cov, mean removed), then 2 - 2 cos averaged. The
    same split is drawn: lightly calls torch.randperm on the global generator, ours on the one
    passed, both seeded alike. track_running_stats=False (its running statistics only matter in
    eval mode). lightly requires w_size >= 2 d; ours does not. DDP: both whiten per process."""
    z1, z2 = rand(16, 3, seed=70), rand(16, 3, seed=71)
    ours = wmse_loss(z1, z2, w_size=8, w_iter=w_iter, eps=eps, generator=torch.Generator().manual_seed(5))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        ref_fn = WMSELoss(embedding_dim=3, w_size=8, w_iter=w_iter, eps=eps, track_running_stats=False)
        ref = ref_fn(torch.cat([z1, z2]))
    assert_close(ours, ref, rtol=1e-10, atol=1e-12)  # Cholesky solves: a little rounding
    assert_close(grads(ours, z1, z2), grads(ref, z1, z2), rtol=1e-9, atol=1e-12)
