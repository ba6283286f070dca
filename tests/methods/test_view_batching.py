"""Method.project_views: a backbone without batch statistics (a ViT) takes both views as one batch and
gives what two forwards give; a BatchNorm backbone keeps one forward per view (its statistics per view)."""

import torch
import torch.nn as nn

from sparsehead.methods.barlow_twins import BarlowTwins
from sparsehead.methods.losses import barlow_twins_loss
from sparsehead.models.heads import mlp


class CountingBackbone(nn.Module):
    """Flatten, a norm layer, a linear map; records the rows of each forward."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm, self.linear, self.batches, self.feature_dim = norm, nn.Linear(12, 8), [], 8

    def forward(self, x):
        self.batches.append(len(x))
        return self.linear(self.norm(x.flatten(1)))


def loss_and_grads(norm: nn.Module, batched: bool):
    """Barlow Twins' loss of two views and its gradients: through the method (batched=True) or by a
    forward per view written here."""
    torch.manual_seed(0)
    method = BarlowTwins(CountingBackbone(norm), mlp(8, 16, 6))
    x1, x2 = torch.randn(2, 5, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    if batched:
        loss = method(x1, x2).loss
    else:
        z1, z2 = (method.projector(method.backbone(x)) for x in (x1, x2))
        loss = barlow_twins_loss(z1, z2, method.params.lambda_offdiag)
    loss.backward()
    return loss.detach(), [p.grad for p in method.parameters()], method.backbone.batches


def test_a_layernorm_backbone_takes_both_views_in_one_forward_with_the_same_loss_and_gradients():
    loss, grads, batches = loss_and_grads(nn.LayerNorm(12), batched=True)
    reference, reference_grads, _ = loss_and_grads(nn.LayerNorm(12), batched=False)
    assert batches == [10]
    torch.testing.assert_close(loss, reference)
    for g, r in zip(grads, reference_grads):
        torch.testing.assert_close(g, r)


def test_a_batchnorm_backbone_keeps_one_forward_per_view():
    loss, grads, batches = loss_and_grads(nn.BatchNorm1d(12), batched=True)
    reference, reference_grads, _ = loss_and_grads(nn.BatchNorm1d(12), batched=False)
    assert batches == [5, 5]
    assert torch.equal(loss, reference) and all(torch.equal(g, r) for g, r in zip(grads, reference_grads))


def test_byol_and_moco_v3_targets_take_both_views_in_one_forward_of_a_layernorm_backbone():
    from sparsehead.methods.byol import BYOL
    from sparsehead.methods.moco_v3 import MoCoV3

    x1, x2 = torch.randn(2, 5, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    for cls in (BYOL, MoCoV3):
        torch.manual_seed(0)
        method = cls(CountingBackbone(nn.LayerNorm(12)), mlp(8, 16, 6))
        method(x1, x2)
        assert method.backbone.batches == [10] and getattr(method, cls.MOMENTUM_COPIES[0]).batches == [10]
        t1, t2 = method.momentum_embed_views(x1, x2)
        torch.testing.assert_close(t1, method.momentum_embed(x1))
        torch.testing.assert_close(t2, method.momentum_embed(x2))
