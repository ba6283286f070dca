"""SparseHead's L2,1 norm: value, column convention, and that the penalty sparsifies a head."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from sparsehead import config
from sparsehead.sparsity import column_norms, l21_norm, penalized_layers, support_size
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
