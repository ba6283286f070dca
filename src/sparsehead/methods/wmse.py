"""W-MSE (Ermolov et al. 2021, htdt/self-supervised): MSE between normalised positives after
whitening the embeddings of each view over random sub-batches, with two views (W-MSE 2).

Defaults are the paper's CIFAR ones (w_size 128, w_iter 1, no shrinkage; it uses head.out_dim 64).
A per-process batch smaller than w_size is whitened whole (tiny runs); a sub-batch must have more
samples than the embedding has dimensions, or its covariance cannot be whitened.
"""

from dataclasses import dataclass

from sparsehead.core.errors import ConfigError
from sparsehead.core.options import opt
from sparsehead.methods.base import Method, MethodOutput, register
from sparsehead.methods.losses import wmse_loss


@register("wmse")
class WMSE(Method):
    display_name = "W-MSE"

    @dataclass
    class Params:
        wmse_w_size: int = opt(
            128,
            "whitening sub-batch size (paper: 128); a smaller per-process batch is "
            "whitened whole; must exceed the embedding dimension",
            min=2,
        )
        wmse_w_iter: int = opt(1, "random sub-batch splits per step (paper's default: 1)", min=1)
        wmse_eps: float = opt(0.0, "shrink the covariance towards I before whitening (official: 0)", min=0.0, max=1.0)

    def whitening_size(self, batch: int) -> int:
        """Sub-batch size for a per-process batch of `batch` views, checked."""
        w_size = min(self.params.wmse_w_size, batch)
        if batch % w_size:
            raise ConfigError(
                f"method.wmse_w_size: the per-process batch of {batch} is not a multiple of "
                f"{w_size}; choose a divisor of it"
            )
        if w_size <= self.embedding_dim:
            raise ConfigError(
                f"method.wmse_w_size: whitening sub-batches of {w_size} need an embedding of "
                f"fewer dimensions, not {self.embedding_dim}; lower head.out_dim (paper: 64) "
                "or raise method.wmse_w_size / train.batch_size"
            )
        return w_size

    def forward(self, x1, x2):
        r1, z1, z2 = self.project_views(x1, x2)
        p = self.params
        return MethodOutput(
            wmse_loss(z1, z2, self.whitening_size(z1.shape[0]), p.wmse_w_iter, p.wmse_eps), {}, r1, (z1, z2)
        )
