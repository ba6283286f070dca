"""Run folders: building a run's model from its config, and loading a trained one back."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sparsehead import config
from sparsehead.core import distributed as dist
from sparsehead.data.views import ViewGenerator
from sparsehead.methods import Method, build_method
from sparsehead.models.backbones import build_backbone
from sparsehead.runs import checkpoint
from sparsehead.runs.folder import RunDir


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU; nothing is hard-coded. Under torchrun, `cuda`
    without an index is this process's own GPU, cuda:LOCAL_RANK (made the current device), so the
    processes of a node never share one."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise config.ConfigError(
            f"train.device: {name} asked for, but no CUDA device is available; use train.device=auto or cpu"
        )
    if device.type == "cuda" and device.index is None:
        local = dist.local_rank()
        if local >= torch.cuda.device_count():
            raise config.ConfigError(
                f"this is process {local} of its node (LOCAL_RANK), but the node has "
                f"{torch.cuda.device_count()} GPU(s); start at most that many with torchrun --nproc_per_node"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return device


def build_model(cfg: config.Config) -> Method:
    backbone = build_backbone(cfg.model, cfg.data.image_size)
    return build_method(cfg.method.name, cfg.method.params, cfg.head, cfg.augment.global_crops, backbone)


def default_run_name(cfg: config.Config) -> str:
    return (
        f"{cfg.method.name}-{cfg.head.kind}-lam{cfg.sparsity.lam:g}-s{cfg.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )


@dataclass
class TrainedRun:
    cfg: config.Config
    method: Method
    views: ViewGenerator  # the run's normalisation and image size, for evaluation input
    checkpoint_path: Path
    run_dir: Path
    state: dict


def load_trained(path_or_run: str | Path, device: torch.device | str = "cpu") -> TrainedRun:
    """A run's model (eval mode) from a checkpoint file or the newest checkpoint of a run folder."""
    path = checkpoint.find(path_or_run)
    state = checkpoint.load(path)
    cfg = config.from_saved(state["config"], state.get("schema", 1))
    method = build_model(cfg)
    method.load_state_dict(state["model"])
    method.to(device).eval()
    views = ViewGenerator(cfg.augment, cfg.data.image_size, state["data_mean"], state["data_std"])
    return TrainedRun(cfg, method, views, path, RunDir.of_checkpoint(path).path, state)
