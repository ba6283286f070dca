"""The small interface every method shares; the training loop knows nothing else about methods.

A method is an nn.Module holding the backbone f, its projection head h and whatever state it
needs (EMA target, predictor, queue) as submodules or buffers, so one state_dict checkpoints
all of it.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..config import Config
from ..models.heads import build_head, out_dim


class Method(nn.Module):
    def __init__(self, cfg: Config, backbone: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.projector = self.build_projector(backbone.feature_dim)
        self.embedding_dim = out_dim(self.projector, backbone.feature_dim)

    def build_projector(self, feature_dim: int) -> nn.Module:
        """The online projection head h as cfg.head describes it (a method without one overrides this)."""
        h = self.cfg.head
        return build_head(h.kind, feature_dim, h.hidden_dim, h.out_dim, h.num_layers, h.last_bn)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The self-supervised loss of two views of a batch, and extra values to log."""
        raise NotImplementedError

    def sparse_head(self) -> nn.Module:
        """The online projection head SparseHead penalises (never an EMA copy or a predictor)."""
        return self.projector

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, z) of the online network, for evaluation and diagnostics."""
        r = self.backbone(x)
        return r, self.projector(r)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Called after each optimiser step (EMA updates and the like)."""
