"""SimCLR (Chen et al. 2020): NT-Xent between the embeddings of two views, or (loss=huang)
Huang et al.'s revised InfoNCE (Huang et al. 2023)."""
from dataclasses import dataclass
from typing import Literal

from ..losses import huang_infonce, nt_xent
from ..options import opt
from .base import Method, MethodOutput, register


@register("simclr")
class SimCLR(Method):
    display_name = "SimCLR"

    @dataclass
    class Params:
        temperature: float = opt(0.5, "softmax temperature tau (SimCLR's paper: 0.5)", min=0.0,
                                 exclusive_min=True)
        loss: Literal["nt_xent", "huang"] = opt(
            "nt_xent", "nt_xent, or huang = Huang et al.'s revised InfoNCE ||z1 - z2||^2 + lambda * mean "
            "log sum exp(z^T z^- / tau) on normalised z, negatives = views of the other images (the "
            "paper used tau 0.2: set method.temperature=0.2)")
        huang_lambda: float = opt(1.0, "weight lambda of the negatives term of method.loss=huang", min=0.0)

    def forward(self, x1, x2):
        r1, z1, z2 = self.project_views(x1, x2)
        p = self.params
        if p.loss == "huang":
            return MethodOutput(huang_infonce(z1, z2, p.temperature, p.huang_lambda), {}, r1)
        return MethodOutput(nt_xent(z1, z2, p.temperature), {}, r1)
