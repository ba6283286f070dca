"""DirectCopy (Wang et al. 2022, papers/004): DirectPred without the eigendecomposition, the
predictor being F itself: W = F / ||F||_F + eps I (CHOICE, as the paper states; the official code
has no normalisation: method.directcopy_normalize=false)."""
import torch

from .directpred import DirectPred


def directcopy_weight(corr: torch.Tensor, eps: float = 0.01, normalize: bool = True) -> torch.Tensor:
    if normalize:
        corr = corr / torch.linalg.matrix_norm(corr).clamp(min=torch.finfo(corr.dtype).tiny)
    return corr + eps * torch.eye(corr.shape[0], dtype=corr.dtype, device=corr.device)


class DirectCopy(DirectPred):
    def predictor_weight(self, corr):
        m = self.cfg.method
        return directcopy_weight(corr, m.predictor_eps, m.directcopy_normalize)
