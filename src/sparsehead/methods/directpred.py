"""DirectPred (Tian et al. 2021, facebookresearch/luckmatters): BYOL whose linear predictor is not
learned but set from the correlation F of its inputs.

Each training forward measures mean(f f^T) over the detached online projections of both views
(averaged across ranks, so every rank sets the same predictor); after each optimiser step it is
folded into F <- rho F + (1 - rho) mean(f f^T) (the first step sets F to it, as the official code's
accumulator), and every `predictor_freq` steps (after the 1st, (1 + freq)th, ...) the predictor
weight is set from F. Doing both in after_step, gated on the device on whether the update went ahead,
means a skipped (non-finite) step leaves F, its count and the weight alone without a read; F and the
weight are in the state_dict, so a resumed run is identical. Before the first update the predictor
is nn.Linear's initialisation, as in the official code.

The eigendecomposition is torch.linalg.eigh, as the official code: on CUDA it reads its error code
back (ATen's _linalg_check_errors, `infos.any().item()`), one host sync at each step that sets the
weight; the rest of the after-step work reads nothing. DirectCopy, without it, reads nothing.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from sparsehead.core.distributed import all_reduce_sum_no_grad, world_size
from sparsehead.core.options import opt
from sparsehead.methods.base import Applied, MethodOutput, register, where_applied
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
    def after_step(self, step, total_steps, applied: Applied = True):
        """The EMA, then, where the update went ahead (`applied`, on the device): this step's mean(f f^T)
        folded into F, and every predictor_freq steps the predictor set from F (once F has any)."""
        super().after_step(step, total_steps, applied)
        if self.pending_corr is not None:
            self.fold_correlation(self.pending_corr, applied)
            self.pending_corr = None
        if (step - 1) % self.params.predictor_freq == 0:
            weight = self.predictor.weight
            weight.copy_(where_applied(applied & (self.corr_updates > 0), self.predictor_weight(self.corr), weight))

    def fold_correlation(self, batch_corr: torch.Tensor, applied: Applied) -> None:
        """F <- rho F + (1 - rho) batch_corr, with rho = 0 at F's first update; F and its count stay where
        the update did not go ahead. Both candidates are computed (F is m x m) and the device picks."""
        rho = self.params.predictor_rho
        folded = torch.where(
            self.corr_updates > 0,
            self.corr.mul(rho).add_(batch_corr, alpha=1 - rho),
            self.corr.mul(0.0).add_(batch_corr, alpha=1.0),  # rho = 0 in the same arithmetic
        )
        self.corr.copy_(where_applied(applied, folded, self.corr))
        self.corr_updates += applied
