"""SimCLR (Chen et al. 2020): NT-Xent between the embeddings of two views, or (loss=huang)
Huang et al.'s revised InfoNCE (Huang et al. 2023).

Multi-crop (augment.global_crops > 2 or augment.local_crops > 0): the two-view loss of every pair
of a global crop with a later crop (the global crops with each other, and each global crop with each
local crop), averaged over the pairs; the negatives of a pair are the views of the other images in
that pair. With two views this is the two-view loss itself. The crops of one size go through the
backbone together (Method.encode_crops), as SimCLR's code runs both views as one batch: BatchNorm
statistics span all the views of a size; the head sees each crop on its own."""

from dataclasses import dataclass
from typing import Literal

from sparsehead.core.options import opt
from sparsehead.methods.base import Method, MethodOutput, register
from sparsehead.methods.losses import huang_infonce, nt_xent


def crop_pairs(num_views: int, global_crops: int) -> list[tuple[int, int]]:
    """(global crop, later crop) index pairs: with two global crops (0, 1), then (0, l) and (1, l)
    for each local crop l."""
    return [(g, v) for g in range(global_crops) for v in range(g + 1, num_views)]


@register("simclr")
class SimCLR(Method):
    display_name = "SimCLR"
    MULTI_CROP = True

    @dataclass
    class Params:
        temperature: float = opt(0.5, "softmax temperature tau (SimCLR's paper: 0.5)", min=0.0, exclusive_min=True)
        loss: Literal["nt_xent", "huang"] = opt(
            "nt_xent",
            "nt_xent, or huang = Huang et al.'s revised InfoNCE ||z1 - z2||^2 + lambda * mean "
            "log sum exp(z^T z^- / tau) on normalised z, negatives = views of the other images (the "
            "paper used tau 0.2: set method.temperature=0.2)",
        )
        huang_lambda: float = opt(1.0, "weight lambda of the negatives term of method.loss=huang", min=0.0)

    def forward(self, *views):
        rs = self.encode_crops(views)
        z = [self.projector(r) for r in rs]
        pairs = crop_pairs(len(z), self.global_crops)
        return MethodOutput(sum(self.pair_loss(z[a], z[b]) for a, b in pairs) / len(pairs), {}, rs[0], tuple(z[:2]))

    def pair_loss(self, z1, z2):
        p = self.params
        if p.loss == "huang":
            return huang_infonce(z1, z2, p.temperature, p.huang_lambda)
        return nt_xent(z1, z2, p.temperature)
