"""SparseHead's L2,1 norm: value, column convention, and that the penalty sparsifies a head."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from sparsehead import config
from sparsehead.sparsity import (SparseHeadRegularizer, column_norms, group_soft_threshold_, l21_norm,
                                 penalized_layers, support_size)
from sparsehead.models.heads import build_head


def test_l21_hand_computed():
    w = torch.tensor([[3.0, 0.0, 1.0], [4.0, 0.0, 1.0]])  # columns: (3,4), (0,0), (1,1)
    assert l21_norm(w).item() == pytest.approx(5.0 + 0.0 + np.sqrt(2))
    assert column_norms(w).tolist() == pytest.approx([5.0, 0.0, np.sqrt(2)])


def test_groups_are_columns_of_an_nn_linear_weight():
    layer = nn.Linear(6, 4)  # weight (out=4, in=6): columns are input features
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[:, 2] = torch.tensor([1.0, -2.0, 0.5, 3.0])
    assert support_size(layer.weight) == 1  # one used input feature
    assert l21_norm(layer.weight).item() == pytest.approx(np.linalg.norm([1.0, -2.0, 0.5, 3.0]))
    # The row convention would count 4 non-zero groups: make sure we are not using it.
    assert int((layer.weight.norm(dim=1) > 0).sum()) == 4


def test_penalised_layer_choice():
    head = build_head("mlp", 16, 32, 8, num_layers=3)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert penalized_layers(head, "last") == linears[-1:]
    assert penalized_layers(head, "first") == linears[:1]
    assert penalized_layers(head, "all") == linears
    assert penalized_layers(nn.Identity(), "last") == []


def test_identity_head_with_sparsity_is_a_config_error():
    with pytest.raises(config.ConfigError, match="sparsity.lam"):
        config.load(None, ["head.kind=identity", "sparsity.lam=1e-3"])


def _train_head_columns(tiny_cfg, lam: float) -> torch.Tensor:
    from sparsehead.train import pretrain
    from sparsehead.runs import load_trained
    cfg = tiny_cfg(f"sparsity.lam={lam}", "train.max_steps=40", "train.epochs=3", "optim.lr=1e-2",
                   f"train.run_name=lam{lam}")
    summary = pretrain(cfg)
    run = load_trained(summary["run_dir"])
    return column_norms(penalized_layers(run.method.projector, "last")[0].weight.detach())


def test_large_lambda_drives_columns_to_zero_and_zero_lambda_does_not(tiny_cfg):
    dense = _train_head_columns(tiny_cfg, 0.0)
    sparse = _train_head_columns(tiny_cfg, 0.5)
    small = lambda norms: float((norms < 0.05 * dense.max()).float().mean())
    assert small(sparse) > 0.6, f"only {small(sparse):.0%} of columns near zero with a large lambda"
    assert small(dense) < 0.1, f"{small(dense):.0%} of columns near zero without the penalty"
    assert sparse.sum() < 0.5 * dense.sum()


# --- proximal mode and adaptive lambda (beyond the paper) -----------------------------------------

def _numpy_group_soft_threshold(w: np.ndarray, step: float) -> np.ndarray:
    out = np.zeros_like(w)
    for j in range(w.shape[1]):
        norm = np.sqrt(np.sum(w[:, j] ** 2))
        if norm > step:
            out[:, j] = w[:, j] * (1 - step / norm)
    return out


def test_group_soft_threshold_is_the_closed_form_with_exact_zeros():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 7))
    w[:, 2] *= 0.01  # norm far below the step: must become exactly zero
    w[:, 4] = 0.0    # an all-zero column stays zero (no 0/0)
    t = torch.tensor(w)
    group_soft_threshold_(t, 0.3)
    np.testing.assert_allclose(t.numpy(), _numpy_group_soft_threshold(w, 0.3), rtol=1e-12, atol=0)
    assert (t[:, 2] == 0).all() and (t[:, 4] == 0).all()
    # Surviving columns keep their direction and lose exactly `step` of norm.
    kept = np.linalg.norm(w, axis=0) > 0.3
    np.testing.assert_allclose(np.linalg.norm(t.numpy(), axis=0)[kept], np.linalg.norm(w, axis=0)[kept] - 0.3)


def test_proximal_mode_thresholds_the_penalised_layer_after_each_step():
    torch.manual_seed(0)
    head = build_head("mlp", 6, 8, 4)
    reg = SparseHeadRegularizer(config.SparsityConfig(lam=2.0, mode="proximal"), head)
    assert reg.loss().item() == 0.0  # no penalty term in the loss
    first, last = head[0].weight.detach().clone(), head[3].weight.detach().double().numpy().copy()
    reg.after_step(lr=0.15)  # step = lr * lam = 0.3
    np.testing.assert_allclose(head[3].weight.detach().numpy(), _numpy_group_soft_threshold(last, 0.3),
                               rtol=1e-6, atol=1e-7)
    assert torch.equal(head[0].weight, first)  # sparsity.layers=last: the first layer is untouched
    assert (head[3].weight.norm(dim=0) == 0).any(), "this lambda must zero at least one column exactly"


def test_penalty_mode_adds_lambda_l21_and_leaves_weights_to_the_optimiser():
    torch.manual_seed(0)
    head = build_head("linear", 6, 0, 4)
    reg = SparseHeadRegularizer(config.SparsityConfig(lam=0.3), head)
    w = head[0].weight.detach().double().numpy()
    assert reg.loss().item() == pytest.approx(0.3 * np.linalg.norm(w, axis=0).sum(), rel=1e-6)
    reg.after_step(lr=0.1)
    np.testing.assert_array_equal(head[0].weight.detach().numpy(), w.astype(np.float32))


def test_proximal_step_on_a_diagonal_head_is_l1_soft_thresholding():
    head = build_head("diagonal", 5, 0, 0)
    w = np.array([0.5, -0.05, 0.2, -1.0, 0.0], dtype=np.float32)
    with torch.no_grad():
        head[0].weight.copy_(torch.from_numpy(w)[None])
    SparseHeadRegularizer(config.SparsityConfig(lam=1.0, mode="proximal"), head).after_step(lr=0.1)
    expected = np.sign(w) * np.maximum(np.abs(w) - 0.1, 0)
    np.testing.assert_allclose(head[0].weight.detach().numpy().ravel(), expected, atol=1e-7)


def _head_with_support(kept: int, total: int = 8) -> nn.Module:
    head = build_head("linear", total, 0, 3)
    with torch.no_grad():
        head[0].weight[:, kept:] = 0
    return head


def test_adaptive_lambda_follows_the_multiplicative_rule():
    cfg = config.SparsityConfig(lam=1e-3, target_support=0.25, adapt_gain=0.5, adapt_every=2)
    reg = SparseHeadRegularizer(cfg, _head_with_support(6))  # support 6/8 = 0.75
    reg.after_step(lr=0.0)
    assert reg.lam == 1e-3  # adapt_every=2: no update on step 1
    reg.after_step(lr=0.0)
    assert reg.lam == pytest.approx(1e-3 * np.exp(0.5 * (0.75 - 0.25)))
    shrink = SparseHeadRegularizer(cfg, _head_with_support(1))  # 1/8 below target: lambda falls
    shrink.after_step(0.0), shrink.after_step(0.0)
    assert shrink.lam == pytest.approx(1e-3 * np.exp(0.5 * (0.125 - 0.25)))
    assert reg.logs()["lambda"] == reg.lam


def test_adaptive_lambda_stays_within_its_range():
    cfg = config.SparsityConfig(lam=1e-3, target_support=0.1, adapt_gain=5.0, lam_range=10.0)
    reg = SparseHeadRegularizer(cfg, _head_with_support(8))
    for _ in range(50):
        reg.after_step(lr=0.0)
    assert reg.lam == pytest.approx(1e-2)


def test_regulariser_state_round_trips_for_an_exact_resume():
    cfg = config.SparsityConfig(lam=1e-3, target_support=0.25, adapt_gain=0.3, adapt_every=2)
    straight = SparseHeadRegularizer(cfg, _head_with_support(6))
    first = SparseHeadRegularizer(cfg, _head_with_support(6))
    for _ in range(3):
        straight.after_step(0.0), first.after_step(0.0)
    resumed = SparseHeadRegularizer(cfg, _head_with_support(6))
    resumed.load_state_dict(first.state_dict())
    for _ in range(4):
        straight.after_step(0.0), resumed.after_step(0.0)
    assert resumed.lam == straight.lam and resumed.steps == straight.steps == 7


def test_adaptive_and_proximal_need_valid_settings():
    with pytest.raises(config.ConfigError, match="sparsity.target_support"):
        config.load(None, ["sparsity.target_support=0.5"])  # lambda 0 cannot be scaled
    with pytest.raises(config.ConfigError, match="sparsity.mode"):
        config.load(None, ["sparsity.mode=prox"])
    with pytest.raises(config.ConfigError, match="sparsity.target_support"):
        config.load(None, ["sparsity.lam=1e-4", "sparsity.target_support=0"])


def _run_sparsity(tiny_cfg, name: str, *overrides: str):
    """A short tiny-digits run; its trained head's last-layer column norms and its metric records."""
    import json
    from sparsehead.runs import load_trained
    from sparsehead.train import pretrain
    cfg = tiny_cfg("sparsity.mode=proximal", "optim.lr=1e-2", "train.max_steps=30", "train.epochs=2",
                   "train.threads=1", f"train.run_name={name}", *overrides)
    threads = torch.get_num_threads()
    try:  # one thread: a tiny model gains nothing from more, and a busy machine thrashes with them
        run_dir = pretrain(cfg)["run_dir"]
    finally:
        torch.set_num_threads(threads)
    norms = column_norms(penalized_layers(load_trained(run_dir).method.projector, "last")[0].weight.detach())
    records = [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]
    return norms, [r for r in records if "lambda" in r]


def test_adaptive_lambda_moves_the_support_towards_its_target(tiny_cfg):
    fixed, _ = _run_sparsity(tiny_cfg, "fixed", "sparsity.lam=0.5")
    adaptive, logs = _run_sparsity(tiny_cfg, "adaptive", "sparsity.lam=0.5", "sparsity.target_support=0.25",
                                   "sparsity.adapt_gain=0.3")
    frac = lambda norms: float((norms > 0).float().mean())
    assert frac(fixed) > 0.9, "the starting lambda alone must keep (almost) every column"
    assert logs[-1]["lambda"] > 0.5 and logs[-1]["head/support_frac"] == frac(adaptive)
    assert abs(frac(adaptive) - 0.25) < 0.5 * abs(frac(fixed) - 0.25), \
        f"support {frac(adaptive):.2f} did not move towards 0.25 (fixed lambda: {frac(fixed):.2f})"
    assert (adaptive == 0).any(), "the proximal step leaves exact zeros"


def test_adaptive_lambda_resumes_exactly(tiny_cfg):
    """The controlled lambda is checkpointed: stopped at step 8 and resumed, the run ends as an
    unbroken one (the same lambda, the same weights)."""
    from sparsehead import checkpoint
    from sparsehead.train import pretrain
    run = lambda name, steps: tiny_cfg(
        "sparsity.mode=proximal", "sparsity.lam=0.5", "sparsity.target_support=0.25", "sparsity.adapt_gain=0.3",
        "optim.lr=1e-2", "train.epochs=2", "train.threads=1", f"train.max_steps={steps}", f"train.run_name={name}")
    threads = torch.get_num_threads()
    try:
        full = pretrain(run("full", 16))["run_dir"]
        pretrain(run("half", 8))
        half = pretrain(run("half", 16))["run_dir"]
    finally:
        torch.set_num_threads(threads)
    a, b = (checkpoint.load(checkpoint.find(d)) for d in (full, half))
    assert a["sparsity"] == b["sparsity"] and a["sparsity"]["lam"] != 0.5  # lambda moved, and resumed
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
