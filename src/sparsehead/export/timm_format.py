"""Export of a timm backbone: timm's own state_dict, and the timm.create_model call that loads it."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

TIMM_FORMAT = "timm-state-dict"


def timm_meta(backbone: nn.Module, name: str) -> dict:
    """The sidecar fields that rebuild the model: its timm name and create_model's keyword arguments."""
    return {
        "format": TIMM_FORMAT,
        "arch": f"timm:{name}",
        "timm_model": name,
        "timm_kwargs": dict(backbone.timm_create_kwargs),
        "feature_dim": backbone.feature_dim,
    }


def timm_loading_snippet(meta: dict, path: str | Path) -> list[str]:
    """Plain timm code (no sparsehead) that rebuilds the exported backbone as `model` and loads it."""
    kwargs = ", ".join(f"{k}={v!r}" for k, v in meta["timm_kwargs"].items())
    lines = [
        "import torch, timm",
        f"model = timm.create_model({meta['timm_model']!r}, {kwargs})  # model(x) is the "
        f"{meta['feature_dim']}-d feature r",
    ]
    if Path(path).suffix == ".safetensors":
        return lines + ["from safetensors.torch import load_file", f"model.load_state_dict(load_file({str(path)!r}))"]
    return lines + [f"model.load_state_dict(torch.load({str(path)!r}, weights_only=True))"]
