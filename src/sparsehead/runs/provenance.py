"""Where a run came from: the code's git commit and the software/hardware environment."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

from sparsehead import __version__


def git_commit(where: str | Path = Path(__file__).parent) -> str:
    """The commit of the git checkout holding `where` (sparsehead's own source by default), with
    "+dirty" when it has uncommitted changes; "unknown" outside a checkout or without git."""
    try:

        def git(*args):
            return subprocess.run(
                ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()

        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):  # not a checkout, git missing, or too slow
        return "unknown"


def environment(device: torch.device) -> dict:
    """Versions, device and host of this process: what a result needs to be reproduced or compared."""
    cuda = torch.cuda.is_available()
    return {
        "sparsehead": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "argv": sys.argv,
    }


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None
