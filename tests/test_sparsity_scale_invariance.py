"""Which methods' losses ignore the scale of the penalised head layer (issue 17).

Scaling the last linear layer of the projection head (weight and bias) by c scales z by c. A loss
that normalises z (SimCLR, MoCo, SwAV, DirectPred/DirectCopy through the cosine, W-MSE through
whitening) does not change at all; one that standardises z or passes it through a BatchNorm first
(Barlow Twins; BYOL, SimSiam and MoCo v3, whose predictor starts with Linear + BatchNorm) changes
only through BatchNorm's eps; VICReg (MSE, a variance hinge at 1, covariance) is not invariant.
For an invariant loss the gradient of the layer is orthogonal to it (Euler: <grad, W> = 0) and
scales as 1/c, so the L2,1 penalty's only free move is to shrink the whole layer, and every
shrink raises the layer's effective learning rate (docs/sparsehead.md, scripts/sparsity_experiments.py).
"""

import copy

import pytest
import torch

from conftest import method_keys
from sparsehead import config
from sparsehead.methods import METHODS
from sparsehead.runs.model import build_model
from sparsehead.sparsity import penalized_layers

EXACT, BN_EPS, NOT_INVARIANT, NO_HEAD = "exact", "up to BatchNorm eps", "not invariant", "no head"
EXPECTED = {
    "simclr": EXACT,
    "moco_v2": EXACT,
    "directpred": EXACT,
    "directcopy": EXACT,
    "wmse": EXACT,
    "swav": EXACT,
    "byol": BN_EPS,
    "barlow_twins": BN_EPS,
    "simsiam": BN_EPS,
    "moco_v3": BN_EPS,
    "vicreg": NOT_INVARIANT,
    "directclr": NO_HEAD,
}
TINY = [
    "data.source=digits",
    "data.image_size=16",
    "model.width=8",
    "head.hidden_dim=64",
    "head.out_dim=16",
    "train.batch_size=64",
]
METHOD_KEYS = ["method.predictor_hidden_dim=32", "method.queue_size=256"]  # where the method has them


def test_every_method_is_classified():
    assert set(EXPECTED) == set(METHODS), "classify the new method's scale invariance here"


def loss_and_grad(model, x1, x2, c: float):
    """The loss with the sparse head's last layer (weight and bias) scaled by c, the layer's gradient
    and the scaled (weight, bias) as one vector."""
    m = copy.deepcopy(model)
    layer = penalized_layers(m.sparse_head(), "last")[0]
    params = [p for p in (layer.weight, getattr(layer, "bias", None)) if p is not None]
    with torch.no_grad():
        for p in params:
            p.mul_(c)
    loss = m(x1, x2).loss
    loss.backward()

    def flat(ts):
        return torch.cat([t.reshape(-1) for t in ts])

    return loss.item(), flat([p.grad for p in params]), flat([p.detach() for p in params])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scaling_the_penalised_layer(name):
    """c is a power of two, so scaling is exact in float32 and an exactly invariant loss returns the
    same bits; scripts/sparsity_experiments.py measures c = 0.1 and 10 in float64 too."""
    kind = EXPECTED[name]
    lam = 0 if kind == NO_HEAD else 1e-4
    cfg = config.load(None, TINY + [f"method.name={name}", f"sparsity.lam={lam}", *method_keys(name, *METHOD_KEYS)])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    if kind == NO_HEAD:
        assert penalized_layers(model.sparse_head(), "last") == []
        return
    g = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randn(64, 3, 16, 16, generator=g) for _ in range(2))
    base, grad, w = loss_and_grad(model, x1, x2, 1.0)
    scaled = {c: loss_and_grad(model, x1, x2, c) for c in (0.125, 0.5, 2.0, 8.0)}
    change = {c: abs(loss - base) / max(abs(base), 1.0) for c, (loss, _, _) in scaled.items()}
    cos = (grad @ w / (grad.norm() * w.norm())).item()
    grad_ratio = scaled[0.5][1].norm().item() / grad.norm().item()
    if kind == EXACT:
        assert max(change.values()) < 1e-6, change  # measured 0 (the same bits) except rounding
        assert abs(cos) < 1e-4, name
        assert grad_ratio == pytest.approx(2.0, rel=1e-5)  # the gradient scales as 1/c
    elif kind == BN_EPS:
        assert change[0.5] < 1e-2 and change[2.0] < 1e-2, change  # float64: at most 2e-3 (SimSiam, c = 0.5)
        assert abs(cos) < 1e-3, name
        assert grad_ratio == pytest.approx(2.0, rel=1e-2)
    else:
        assert change[2.0] > 0.1 and change[8.0] > 1.0, change  # float64: 0.4 at c = 2, 34 at c = 10 (VICReg)
        assert abs(cos) > 0.05, name  # the loss has a radial gradient (float64: 0.32)
