"""Projection heads of Jing et al. 2022 Table 2: each head's defining property, against numpy."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from sparsehead import config
from sparsehead.models.heads import Diagonal, build_head, default_rank, linear_layers
from sparsehead.sparsity import SparseHeadRegularizer, l21_norm, penalized_layers

D = 12  # backbone features in these tests


def _train(head: nn.Module, steps: int = 20, lr: float = 0.05, in_dim: int = D) -> None:
    """A few Adam steps of a loss that wants every output to move (any head that can learn does)."""
    torch.manual_seed(1)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if params else None
    target = torch.randn(in_dim)
    for _ in range(steps):
        loss = ((head(torch.randn(32, in_dim)) - target) ** 2).mean()
        if opt:
            opt.zero_grad()
            loss.backward()
            opt.step()


def _as_matrix(head: nn.Module, in_dim: int = D) -> np.ndarray:
    """The head's (bias-free part of its) linear map, W with z = W r, read off the basis vectors."""
    with torch.no_grad():
        eye = torch.eye(in_dim, dtype=torch.float64)
        zero = head.double()(torch.zeros(1, in_dim, dtype=torch.float64))
        out = head(eye) - zero
        head.float()
    return out.numpy().T


def test_diagonal_is_elementwise_and_stays_diagonal_after_training():
    head = build_head("diagonal", D, 0, 0)
    _train(head)
    w = head[0].weight.detach().numpy().ravel()
    assert not np.allclose(w, 1.0), "the diagonal did not train"
    m = _as_matrix(head)
    np.testing.assert_allclose(m, np.diag(w), atol=1e-12)  # all off-diagonal entries exactly 0
    r = torch.randn(5, D)
    np.testing.assert_allclose(head(r).detach().numpy(), r.numpy() @ np.diag(w).T, rtol=1e-6, atol=1e-6)
    assert sum(p.numel() for p in head.parameters()) == D


def test_diagonal_gradient():
    layer = Diagonal(torch.randn(4, dtype=torch.float64))
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_orthogonal_singular_values_stay_one_after_training():
    torch.manual_seed(0)
    head = build_head("orthogonal", D, 0, 0)
    before = _as_matrix(head)
    _train(head, lr=0.1)
    w = head[0].weight.detach().double().numpy()
    assert np.abs(w - before).max() > 0.05, "the orthogonal head did not train"
    np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), np.ones(D), atol=1e-5)
    np.testing.assert_allclose(w @ w.T, np.eye(D), atol=1e-5)


def test_orthogonal_gradient():
    torch.manual_seed(0)
    head = build_head("orthogonal", 4, 0, 0).double()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(head, (x,))


@pytest.mark.parametrize("kind", ["lowrank", "lowrank_diagonal"])
def test_fixed_heads_have_no_parameters_get_no_update_and_are_saved(kind):
    torch.manual_seed(0)
    head = build_head(kind, D, 0, 0, rank=5)
    assert list(head.parameters()) == []
    frozen = {k: v.clone() for k, v in head.state_dict().items()}
    assert frozen, "the fixed matrix must be in the state_dict"
    # Train a layer in front of the head: gradient flows through the head, the head never changes.
    model = nn.Sequential(nn.Linear(D, D), head)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(5):
        loss = model(torch.randn(8, D)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model[0].weight.grad.abs().sum() > 0
    for k, v in head.state_dict().items():
        assert torch.equal(v, frozen[k]) and not v.requires_grad


def test_lowrank_has_rank_d0_exactly_with_unit_singular_values():
    torch.manual_seed(0)
    head = build_head("lowrank", D, 0, 0, rank=5)
    w = _as_matrix(head)
    assert np.linalg.matrix_rank(w, tol=1e-5) == 5
    np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), [1] * 5 + [0] * (D - 5), atol=1e-5)
    assert np.abs(w - np.diag(np.diag(w))).max() > 0.01  # rotated: not a diagonal matrix


def test_lowrank_diagonal_keeps_the_first_d0_features():
    head = build_head("lowrank_diagonal", D, 0, 0, rank=5)
    r = torch.randn(6, D)
    expected = r.numpy().copy()
    expected[:, 5:] = 0
    np.testing.assert_array_equal(head(r).numpy(), expected)


def test_fixed_heads_are_seeded():
    torch.manual_seed(3)
    a = build_head("lowrank", D, 0, 0, rank=4)[0].weight
    torch.manual_seed(3)
    b = build_head("lowrank", D, 0, 0, rank=4)[0].weight
    torch.manual_seed(4)
    c = build_head("lowrank", D, 0, 0, rank=4)[0].weight
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_default_and_invalid_rank():
    assert default_rank(2048) == 360  # DirectCLR's d0 on ResNet-50
    assert default_rank(512) == 90
    assert build_head("lowrank_diagonal", 512, 0, 0)[0].weight.sum().item() == 90
    with pytest.raises(ValueError, match="head.rank"):
        build_head("lowrank", D, 0, 0, rank=D + 1)
    with pytest.raises(config.ConfigError, match="head.rank"):
        config.load(None, ["model.width=8", "head.kind=lowrank", "head.rank=65"])  # 64 features
    assert config.load(None, ["model.width=8", "head.kind=lowrank", "head.rank=64"]).head.rank == 64


def test_sparsehead_acts_on_the_right_layer_of_each_head():
    torch.manual_seed(0)
    heads = {
        kind: build_head(kind, D, 16, 8, num_layers=3, rank=4)
        for kind in ["identity", "linear", "mlp", "diagonal", "orthogonal", "lowrank", "lowrank_diagonal"]
    }
    assert penalized_layers(heads["linear"], "last") == [heads["linear"][0]]
    assert penalized_layers(heads["mlp"], "last") == [heads["mlp"][6]]
    assert penalized_layers(heads["mlp"], "first") == [heads["mlp"][0]]
    assert penalized_layers(heads["diagonal"], "last") == [heads["diagonal"][0]]
    for kind in ["identity", "orthogonal", "lowrank", "lowrank_diagonal"]:
        assert linear_layers(heads[kind]) == [], kind


def test_diagonal_l21_is_the_l1_norm_of_the_diagonal():
    head = build_head("diagonal", 4, 0, 0)
    with torch.no_grad():
        head[0].weight.copy_(torch.tensor([[0.5, -2.0, 0.0, 3.0]]))
    assert l21_norm(head[0].weight).item() == pytest.approx(5.5)
    reg = SparseHeadRegularizer(config.SparsityConfig(lam=0.1), head)
    assert reg.penalty().item() == pytest.approx(0.55)
    assert reg.logs()["head/support"] == 3


@pytest.mark.parametrize("kind", ["identity", "orthogonal", "lowrank", "lowrank_diagonal"])
def test_sparsehead_on_a_head_without_penalisable_layer_is_a_config_error(kind):
    with pytest.raises(config.ConfigError, match=r"sparsity\.lam.*head\.kind"):
        config.load(None, [f"head.kind={kind}", "sparsity.lam=1e-4"])
    config.load(None, [f"head.kind={kind}", "sparsity.lam=0"])


@pytest.mark.parametrize("kind", ["orthogonal", "lowrank"])  # a parametrised layer, a fixed buffer
def test_heads_train_in_byol(kind):
    from sparsehead.runs.model import build_model

    cfg = config.load(None, ["model.width=8", "data.image_size=16", f"head.kind={kind}", "method.name=byol"])
    torch.manual_seed(0)
    method = build_model(cfg)
    assert method.embedding_dim == 64
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    x1, x2 = torch.randn(2, 8, 3, 16, 16).unbind(0)
    loss = method(x1, x2).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    method.after_step(1, 10)  # BYOL's EMA of the projector, fixed buffers included
    r, z = method.embed(x1)
    assert torch.isfinite(loss) and z.shape == (8, 64)


@pytest.mark.parametrize("kind", ["lowrank", "lowrank_diagonal"])
def test_configured_rank_reaches_the_method_head(kind):
    from sparsehead.runs.model import build_model

    method = build_model(config.load(None, [f"head.kind={kind}", "head.rank=7", "model.width=8"]))
    singular = np.linalg.svd(method.projector(torch.randn(100, 64)).detach().double().numpy(), compute_uv=False)
    assert (singular > 1e-4 * singular[0]).sum() == 7  # float32 round-off leaves the rest near 1e-7
