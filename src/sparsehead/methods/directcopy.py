"""DirectCopy (Wang et al. 2022, Wang et al. 2021): DirectPred without the eigendecomposition, the
predictor being F itself: W = F / ||F||_F + eps I (CHOICE, as the paper states; the official code
has no normalisation: method.directcopy_normalize=false)."""

from dataclasses import dataclass

import torch

from sparsehead.core.options import opt
from sparsehead.methods.base import register
from sparsehead.methods.directpred import DirectPred


def directcopy_weight(corr: torch.Tensor, eps: float = 0.01, normalize: bool = True) -> torch.Tensor:
    if normalize:
        corr = corr / torch.linalg.matrix_norm(corr).clamp(min=torch.finfo(corr.dtype).tiny)
    return corr + eps * torch.eye(corr.shape[0], dtype=corr.dtype, device=corr.device)


@register("directcopy")
class DirectCopy(DirectPred):
    display_name = "DirectCopy"

    @dataclass
    class Params(DirectPred.Params):
        directcopy_normalize: bool = opt(
            True, "divide F by its Frobenius norm as the paper states (false: the official code, no normalisation)"
        )

    def predictor_weight(self, corr):
        p = self.params
        return directcopy_weight(corr, p.predictor_eps, p.directcopy_normalize)
