"""SparseHead: the L2,1 penalty on a projection head and its sparsity statistics (formulas:
docs/references.md, SparseHead).

Groups are the COLUMNS of an nn.Linear weight (shape out x in): one group per input feature,
so a zero column means the layer ignores that input. `weight.norm(dim=1)` would prune output
units instead, which is not the paper's penalty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn as nn

from sparsehead.core.errors import ConfigError
from sparsehead.core.options import opt
from sparsehead.core.step_hook import StepHook
from sparsehead.maths.concentration import gini, top_share
from sparsehead.models.heads import HEADS, linear_layers


def sparsity_active(cfg: SparsityConfig) -> bool:
    """Whether SparseHead acts on the head at all (a `sparsity` config section): a penalty, a
    proximal step or pruning."""
    return cfg.lam > 0 or cfg.mode == "prune"


SPARSITY_MODES = ("penalty", "proximal", "prune")


@dataclass
class SparsityConfig:
    lam: float = opt(
        0.0,
        "SparseHead lambda: weight of the L2,1 penalty (paper: 1e-4; 0 = off); "
        "with sparsity.target_support in penalty/proximal mode, the starting value",
        min=0.0,
    )
    layers: Literal["last", "first", "all"] = opt("last", "which linear layers of the head are penalised (paper: last)")
    support_threshold: float = opt(
        1e-3, "a column counts as zero when its norm is below this fraction of the largest", min=0.0
    )
    mode: Literal[SPARSITY_MODES] = opt(
        "penalty",
        "penalty (the default, the paper's method; use it to reproduce the paper): lambda * L2,1 added to the loss. "
        "Every method but VICReg ignores the head layer's scale, so the penalty mostly shrinks the whole layer: under"
        " Adam, AdamW and SGD with momentum it also spreads the column norms but zeroes none; under LARS (trust "
        "ratio) it barely acts. proximal: no loss term, each column group-soft-thresholded by lr * lambda after every"
        " optimiser step (exact zeros): the proximal gradient step under plain SGD (with momentum it is weaker than "
        "the penalty at the same lambda, which momentum amplifies); under Adam/AdamW lambda must be of order 1-10, "
        "with a narrow window between no effect and a collapsed head; under LARS lr * lambda is off LARS's step "
        "scale. prune (recommended for a sparse head; the same under every optimiser): the penalty as above if lambda"
        " > 0, plus pruning of the smallest-norm columns on a cubic schedule from sparsity.prune_start to "
        "sparsity.prune_end to exactly round(target_support * columns); pruned columns are set to exact zero after "
        "every step and stay zero; the mask is saved in checkpoints. See docs/sparsehead.md",
    )
    target_support: Optional[float] = opt(
        None,
        "penalty/proximal: adaptive lambda, fraction of penalised columns to keep; lambda is "
        "multiplied by exp(adapt_gain * (support_frac - target)) every adapt_every steps (null: fixed "
        "lambda); prune: the fraction of columns the pruning schedule ends at (required)",
        min=0.0,
        max=1.0,
        exclusive_min=True,
    )
    adapt_gain: float = opt(0.05, "adaptive lambda: gain of the multiplicative update", min=0.0, exclusive_min=True)
    adapt_every: int = opt(1, "adaptive lambda: optimiser steps between updates", min=1)
    lam_range: float = opt(
        1e4, "adaptive lambda stays within [lam / lam_range, lam * lam_range] of the starting sparsity.lam", min=1.0
    )
    prune_start: float = opt(
        0.1,
        "prune mode: fraction of the run's optimiser steps (train.epochs) after which pruning starts",
        min=0.0,
        max=1.0,
    )
    prune_end: float = opt(
        0.5,
        "prune mode: fraction of the run's steps at which the support reaches "
        "target_support (then only fine-tuning with the mask)",
        min=0.0,
        max=1.0,
    )

    def check(self) -> None:
        """prune mode: a target and a schedule in order; the adaptive lambda: a lambda to scale."""
        if self.mode == "prune":
            if self.target_support is None:
                raise ConfigError(
                    "sparsity.target_support: sparsity.mode=prune prunes the head to this "
                    "fraction of its columns; set it, e.g. sparsity.target_support=0.25"
                )
            if self.prune_start > self.prune_end:
                raise ConfigError(
                    f"sparsity.prune_start: {self.prune_start} is after sparsity.prune_end="
                    f"{self.prune_end}; pruning must start before it ends, e.g. 0.1 and 0.5"
                )
        elif self.target_support is not None and self.lam == 0:
            raise ConfigError(
                "sparsity.target_support: the adaptive lambda starts from sparsity.lam and "
                "scales it; set sparsity.lam > 0, e.g. sparsity.lam=1e-4, or prune to the "
                "target with sparsity.mode=prune"
            )


def cannot_act(cfg: SparsityConfig, target: str, why: str, instead: str) -> str:
    """The one message for "SparseHead (the `sparsity` section `cfg`) cannot act on `target`":
    why, what to choose `instead`, or the setting that turns SparseHead off."""
    key, off = ("sparsity.lam", "sparsity.lam=0") if cfg.lam > 0 else ("sparsity.mode", "sparsity.mode=penalty")
    return f"{key}: SparseHead cannot act on {target} ({why}); set {instead}, or {off}"


def head_problem(head_kind: str, cfg: SparsityConfig) -> Optional[str]:
    """Why SparseHead cannot act on a head of `head_kind` (None: it can, or it is off)."""
    if not sparsity_active(cfg) or HEADS.lookup(head_kind).sparsehead:
        return None
    why = (
        "its columns all have norm 1, so the L2,1 penalty is constant"
        if head_kind == "orthogonal"
        else "it has no trainable linear layer"
    )
    return cannot_act(cfg, f"head.kind={head_kind}", why, "head.kind=linear, mlp or diagonal")


def column_norms(weight: torch.Tensor) -> torch.Tensor:
    """||W[:, j]||_2 for every input feature j of an (out, in) weight."""
    return weight.norm(p=2, dim=0)


def l21_norm(weight: torch.Tensor) -> torch.Tensor:
    """||W||_{2,1} = sum_j ||W[:, j]||_2, the sum of the column norms."""
    return column_norms(weight).sum()


def penalized_layers(head: nn.Module, which: str) -> list[nn.Module]:
    """The head's linear layers SparseHead acts on: "last" (paper), "first" or "all"."""
    layers = linear_layers(head)
    if not layers:
        return []
    return {"last": layers[-1:], "first": layers[:1], "all": layers}[which]


def penalty(layers: list[nn.Module]) -> torch.Tensor:
    """Sum of the L2,1 norms of the layers' weights (biases are never penalised)."""
    return sum((l21_norm(layer.weight) for layer in layers), torch.zeros(()))


def support_count(weight: torch.Tensor, threshold: float = 1e-3) -> torch.Tensor:
    """Number of columns whose norm is at least `threshold` times the largest column norm (on the device)."""
    norms = column_norms(weight.detach())
    return (norms >= threshold * norms.max().clamp_min(1e-30)).sum()


def support_size(weight: torch.Tensor, threshold: float = 1e-3) -> int:
    return int(support_count(weight, threshold))


def group_soft_threshold_(weight: torch.Tensor, step, applied=True) -> None:
    """In place, the proximal map of step * ||W||_{2,1}: W[:, j] <- W[:, j] * max(0, 1 - step /
    ||W[:, j]||). Columns with norm <= step become exactly zero; the others shrink by `step` (a float
    or a device tensor). `applied` (True or a device bool): where False, W stays."""
    shrink = (1 - column_norms(weight).clamp_min(1e-30).reciprocal() * step).clamp_min(0)
    weight.mul_(gated(applied, shrink, 1.0))


def gated(applied, new: torch.Tensor, old):
    """`new` where a step's update went ahead (`applied`: True, or a device bool), else `old`."""
    return new if applied is True else torch.where(applied, new, old)


def pruning_keep(step: int, total_steps: int, columns: int, target: float, start: float, end: float) -> int:
    """Columns kept after `step` optimiser steps by the pruning schedule (Zhu & Gupta 2017's cubic
    one): all of them until step t0 = round(start * total_steps), then

        keep = final + ceil((columns - final) * ((t1 - step) / (t1 - t0)) ** 3),   t0 < step < t1,

    and `final` = max(1, round(target * columns)) from t1 = round(end * total_steps) on. Integer
    arithmetic throughout, so every machine prunes at the same steps."""
    final = min(columns, max(1, round(target * columns)))
    t0, t1 = round(start * total_steps), round(end * total_steps)
    if step >= t1:
        return final
    if step <= t0:
        return columns
    span, left = t1 - t0, t1 - step
    return final + -(-(columns - final) * left**3 // span**3)  # ceil division


@torch.no_grad()
def prune_mask(weight: torch.Tensor, mask: torch.Tensor, keep) -> torch.Tensor:
    """The new column mask: of the columns `mask` still keeps, the `keep` (an int or a device tensor) of
    largest norm (ties: the lower index). Pruned columns stay pruned, so the support only shrinks.
    Computed on the device: each column's rank by norm, nothing read back."""
    norms = column_norms(weight).float().masked_fill(~mask, -1.0)
    order = torch.argsort(norms, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
    return mask & (rank < keep)


def sparsity_logs(layers: list[nn.Module], threshold: float) -> dict[str, float]:
    """Per penalised layer: support size, its fraction, and the column-norm summary (with their
    concentration: the top 10% of the columns' share of the norms)."""
    logs: dict[str, float] = {}
    for i, layer in enumerate(layers):
        norms = column_norms(layer.weight.detach()).float()
        tag = f"head{i}" if len(layers) > 1 else "head"
        logs[f"{tag}/support"] = support_size(layer.weight, threshold)
        logs[f"{tag}/support_frac"] = logs[f"{tag}/support"] / norms.numel()
        logs[f"{tag}/colnorm_max"] = norms.max().item()
        logs[f"{tag}/colnorm_median"] = norms.median().item()
        logs[f"{tag}/colnorm_min"] = norms.min().item()
        logs[f"{tag}/colnorm_top10_share"] = top_share(norms)
    return logs


class SparseHeadRegularizer(StepHook):
    """What the training loop needs of SparseHead: the penalty term, the work after an optimiser step, and what to
    log. Variants live here, not in the loop:
    - mode "penalty": lambda * L2,1 in the loss (the paper); "proximal": no loss term, a group soft-threshold by
      lr * lambda after each optimiser step (proximal SGD's step, also used after Adam: see docs/sparsehead.md);
      "prune": the paper's penalty (if lambda > 0) plus scheduled magnitude pruning of whole columns to
      `target_support`: after each optimiser step the columns outside a mask are set to exact zero, and the mask
      drops the smallest-norm columns as pruning_keep() schedules (needs total_steps, the length of the
      schedules).
    - target_support (penalty, proximal): lambda <- lambda * exp(gain * (support_frac - target)) every adapt_every
      steps, within [lam / lam_range, lam * lam_range]. In prune mode it is the support the schedule ends at, and
      lambda stays fixed.
    The lambda, the step count and (prune) the masks are this object's state: save state_dict() with each
    checkpoint for an exact resume."""

    state_key = "sparsity"

    def __init__(self, cfg: SparsityConfig, head: nn.Module, total_steps: Optional[int] = None):
        self.cfg = cfg
        self.layers = penalized_layers(head, cfg.layers)
        device = self.layers[0].weight.device if self.layers else torch.device("cpu")
        # On the device, so that a step reads nothing back: lambda (float64) and the updates taken.
        self._lam = torch.tensor(cfg.lam, dtype=torch.float64, device=device)
        self._steps = torch.zeros((), dtype=torch.int64, device=device)
        self.pruning = cfg.mode == "prune"
        if self.pruning:
            if total_steps is None or cfg.target_support is None:
                raise ValueError("mode prune needs target_support and the run's total_steps")
            self.masks = [torch.ones(layer.weight.shape[1], dtype=torch.bool, device=device) for layer in self.layers]
            c = cfg
            steps = range(round(c.prune_end * total_steps) + 1)  # the schedule is flat from the last of these on
            self.keep_at = [  # per layer, the columns kept after each step count
                torch.tensor(
                    [pruning_keep(t, total_steps, n, c.target_support, c.prune_start, c.prune_end) for t in steps]
                ).to(device)
                for n in (layer.weight.shape[1] for layer in self.layers)
            ]

    @property
    def lam(self) -> float:  # read back: for logs and checkpoints
        return float(self._lam)

    @property
    def steps(self) -> int:
        return int(self._steps)

    def penalty(self) -> torch.Tensor:
        """lambda * sum of the L2,1 norms of the penalised weights (0 when off or proximal)."""
        if self.cfg.lam == 0 or not self.layers or self.cfg.mode == "proximal":
            return torch.zeros((), device=self.layers[0].weight.device if self.layers else "cpu")
        return self._lam.float() * penalty(self.layers)

    def after_step(self, step: int, lr: float) -> None:  # an update known to have gone ahead
        self.after_update(step, lr, True)

    @torch.no_grad()
    def after_update(self, step: int, lr: float, applied=True) -> None:
        """After each step, with its learning rate; where `applied` (True, or a device bool) is False the update
        was skipped and nothing moves (this object counts the updates that went ahead). All on the device."""
        self._steps += applied
        if self.cfg.mode == "proximal" and self.cfg.lam > 0:
            for layer in self.layers:
                group_soft_threshold_(layer.weight, lr * self._lam, applied)
        if self.pruning:
            self.prune(applied)
        elif self.cfg.target_support is not None and self.layers:
            # The controller: more columns kept than the target -> larger lambda (float64, as Python's floats).
            c, due = self.cfg, gated(applied, self._steps % self.cfg.adapt_every == 0, False)
            lam = (self._lam * torch.exp(c.adapt_gain * (self.support_frac() - c.target_support))).clamp(
                c.lam / c.lam_range, c.lam * c.lam_range
            )
            self._lam = torch.where(due, lam, self._lam)

    def prune(self, applied=True) -> None:
        """Shrink each layer's mask to the schedule, then zero every column outside it (again after
        every step: the optimiser moves zeroed weights, whose gradient is not zero)."""
        for i, layer in enumerate(self.layers):
            keep = self.keep_at[i].gather(0, self._steps.clamp(max=len(self.keep_at[i]) - 1).view(1))
            self.masks[i] = gated(applied, prune_mask(layer.weight, self.masks[i], keep), self.masks[i])
            layer.weight.mul_(self.masks[i].to(layer.weight.dtype))

    def support_frac(self) -> torch.Tensor:
        """Kept columns over all penalised layers, as a fraction of their columns (float64, on the device)."""
        kept = sum(support_count(layer.weight, self.cfg.support_threshold) for layer in self.layers)
        return kept.double() / sum(layer.weight.shape[1] for layer in self.layers)

    def logs(self) -> dict[str, float]:
        l21 = sum(l21_norm(layer.weight.detach()).item() for layer in self.layers)
        logs = {"lambda": self.lam, "l21": l21, **sparsity_logs(self.layers, self.cfg.support_threshold)}
        if self.pruning and self.layers:  # the mask's kept fraction (the support counts exact zeros out too)
            logs["prune_keep_frac"] = sum(int(m.sum()) for m in self.masks) / sum(m.numel() for m in self.masks)
        return logs

    def state_dict(self) -> dict:
        state = {"lam": self.lam, "steps": self.steps}
        if self.pruning:
            state["masks"] = [m.clone() for m in self.masks]
        return state

    def load_state_dict(self, state: dict) -> None:
        self._lam.fill_(float(state["lam"]))
        self._steps.fill_(int(state["steps"]))
        if self.pruning:
            if len(state.get("masks", ())) != len(self.layers):
                raise ValueError("the checkpoint has no pruning masks for this head (made with another sparsity.mode?)")
            self.masks = [
                m.to(dtype=torch.bool, device=layer.weight.device).clone()
                for m, layer in zip(state["masks"], self.layers)
            ]


def head_sparsity(head: nn.Module, which: str = "last", threshold: float = 1e-3) -> list[dict]:
    """For each linear layer SparseHead acts on (`which` as sparsity.layers): its column norms
    (one per input feature, descending), the support size at `threshold` x the largest norm, the
    L2,1 norm and the concentration of the norms (top-10% share, Gini) (the analysis report's view
    of the head; sparsity_logs is the training log's). An identity head has none."""
    out = []
    for layer in penalized_layers(head, which):
        w = layer.weight.detach().float().cpu()
        support, norms = support_size(w, threshold), column_norms(w)
        out.append(
            {
                "shape": list(w.shape),
                "support": support,
                "support_frac": support / w.shape[1],
                "support_threshold": threshold,
                "l21": l21_norm(w).item(),
                "top10_share": top_share(norms),
                "gini": gini(norms),
                "column_norms": norms.sort(descending=True).values.tolist(),
            }
        )
    return out
