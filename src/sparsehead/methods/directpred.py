"""DirectPred (Tian et al. 2021, facebookresearch/luckmatters): BYOL whose linear predictor is not
learned but set from the correlation F of its inputs.

Each training forward measures mean(f f^T) over the detached online projections of both views
(averaged across ranks, so every rank sets the same predictor); after each optimiser step it is
folded into F <- rho F + (1 - rho) mean(f f^T) (the first step sets F to it, as the official code's
accumulator), and every `predictor_freq` steps (after the 1st, (1 + freq)th, ...) the predictor
weight is set from F. Doing both in after_step means a skipped (non-finite) step leaves F alone, and
F and the weight are in the state_dict, so a resumed run is identical. Before the first step the
predictor is nn.Linear's initialisation, as in the official code.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from sparsehead.core.distributed import all_reduce_sum_no_grad, world_size
from sparsehead.core.options import opt
from sparsehead.methods.base import MethodOutput, register
from sparsehead.methods.byol import BYOL
from sparsehead.methods.momentum import momentum_opt


def directpred_weight(corr: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """U diag(p) U^T with eigh(F) = U diag(s) U^T, p = sqrt(clamp(s, 0) / max s) + eps, p >= 1e-4."""
    s, u = torch.linalg.eigh(corr.double())
    p = (s.clamp(min=0) / s.max().clamp(min=torch.finfo(s.dtype).tiny)).sqrt() + eps
    return ((u * p.clamp(min=1e-4)) @ u.T).to(corr.dtype)


@torch.no_grad()
def batch_correlation(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Uncentred mean(f f^T) over both views of the global batch."""
    f = torch.cat([z1, z2]).detach()
    return all_reduce_sum_no_grad(f.T @ f) / (f.shape[0] * world_size())


@register("directpred")
class DirectPred(BYOL):
    display_name = "DirectPred"
    STATE = BYOL.STATE + ("corr", "corr_updates")

    @dataclass
    class Params:
        momentum: float = momentum_opt(0.99)
        predictor_freq: int = opt(1, "set the predictor from F every N steps (official code: 1)", min=1)
        predictor_rho: float = opt(0.3, "F <- rho F + (1 - rho) mean(f f^T)", min=0.0, max=1.0)
        predictor_eps: float = opt(
            0.01, "eps added to the predictor's eigenvalues (DirectCopy: eps I added to the predictor)", min=0.0
        )

    def __init__(self, backbone, projector=None, params=None, **values):
        super().__init__(backbone, projector, params, **values)
        m = self.embedding_dim
        self.register_buffer("corr", torch.zeros(m, m))
        self.register_buffer("corr_updates", torch.zeros((), dtype=torch.long))
        self.pending_corr = None  # this step's mean(f f^T), folded into F once the step is taken

    def build_predictor(self):
        # Set, never learned: frozen for the optimiser.
        return nn.Linear(self.embedding_dim, self.embedding_dim, bias=False).requires_grad_(False)

    def predictor_weight(self, corr: torch.Tensor) -> torch.Tensor:
        return directpred_weight(corr, self.params.predictor_eps)

    def forward(self, x1, x2):
        r1, z1, z2 = self.project_views(x1, x2)
        if self.training:
            self.pending_corr = batch_correlation(z1, z2)
        return MethodOutput(self.regress_target(z1, z2, x1, x2), {}, r1, (z1, z2))

    @torch.no_grad()
    def after_step(self, step, total_steps):
        super().after_step(step, total_steps)
        if self.pending_corr is not None:
            rho = self.params.predictor_rho if self.corr_updates > 0 else 0.0
            self.corr.mul_(rho).add_(self.pending_corr, alpha=1 - rho)
            self.corr_updates += 1
            self.pending_corr = None
        if (step - 1) % self.params.predictor_freq == 0 and self.corr_updates > 0:
            self.predictor.weight.copy_(self.predictor_weight(self.corr))
