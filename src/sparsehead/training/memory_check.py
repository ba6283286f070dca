"""Before any decoding or step: does one batch of views fit the training device's memory?

Each step holds its batch's views at once: the local batch x every view of the crop plan (global
crops at data.image_size, local crops at theirs) x 3 channels x side^2, in float32 whatever
train.precision (autocast casts inside the model). That is a lower bound of what a step needs (the
model's activations come on top), so a batch over the memory available cannot run: it is refused
here in one line, rather than as an allocator's traceback at step 1. On the CPU the processes of a
node share its memory, each with its own views.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from sparsehead.config import Config
from sparsehead.core import distributed as dist
from sparsehead.core.errors import ConfigError
from sparsehead.data.augment import resolve_recipe
from sparsehead.data.crops import crop_plan

VIEW_VALUE_BYTES = 4  # float32
MEMINFO = Path("/proc/meminfo")


def views_bytes(cfg: Config, local_batch: int) -> int:
    """The bytes one step's views take in one process."""
    plan = crop_plan(resolve_recipe(cfg.augment), cfg.data.image_size)
    return local_batch * sum(3 * spec.size**2 for spec in plan) * VIEW_VALUE_BYTES


def available_bytes(device: torch.device) -> Optional[int]:
    """Memory free for new tensors on `device`: the GPU's free memory, the CPU's MemAvailable (Linux);
    None where it cannot be read (then nothing is refused)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_views_fit(cfg: Config, device: torch.device) -> None:
    """Refuse, naming the batch and image size and the fix, a batch whose views alone exceed the memory
    `device` has available."""
    available = available_bytes(device)
    if available is None:
        return
    local_batch = cfg.train.batch_size // dist.world_size()
    sharing = dist.local_world_size() if device.type == "cpu" else 1  # the node's processes, each its own views
    need = sharing * views_bytes(cfg, local_batch)
    if need <= available:
        return
    views = len(crop_plan(resolve_recipe(cfg.augment), cfg.data.image_size))
    held = f" in each of {sharing} processes" if sharing > 1 else ""
    raise ConfigError(
        f"one batch of views needs {need / 1e9:.2f} GB ({local_batch} images x {views} views at "
        f"data.image_size={cfg.data.image_size} px{held}, float32), more than the {available / 1e9:.2f} GB "
        f"available on {device} (the model's activations come on top): lower train.batch_size="
        f"{cfg.train.batch_size} or data.image_size (or augment.local_crops)"
    )
