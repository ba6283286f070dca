"""Methods by name: each is one file, registered with `@sparsehead.methods.register("name")`.

Importing this package registers the built-in methods; a plugin module registers its own the
same way (see sparsehead.core.plugins). `METHODS` maps every registered name to its class.
"""

# Imported in this order so that tables list the methods in it (the registry keeps import order).
from sparsehead.methods import simclr, byol, barlow_twins, simsiam, vicreg, moco_v2, moco_v3  # noqa: F401,I001
from sparsehead.methods import directclr, directpred, directcopy, wmse, swav  # noqa: F401,I001
from sparsehead.methods.barlow_twins import BarlowTwins
from sparsehead.methods.base import METHODS, Method, MethodOutput, params_of, register
from sparsehead.methods.byol import BYOL
from sparsehead.methods.directclr import DirectCLR
from sparsehead.methods.directcopy import DirectCopy
from sparsehead.methods.directpred import DirectPred
from sparsehead.methods.moco_v2 import MoCoV2
from sparsehead.methods.moco_v3 import MoCoV3
from sparsehead.methods.simclr import SimCLR
from sparsehead.methods.simsiam import SimSiam
from sparsehead.methods.swav import SwAV
from sparsehead.methods.vicreg import VICReg
from sparsehead.methods.wmse import WMSE
from sparsehead.models.heads import HeadConfig
from torch import nn

__all__ = [
    "METHODS",
    "Method",
    "MethodOutput",
    "register",
    "params_of",
    "build_method",
    "display_name",
    "SimCLR",
    "BYOL",
    "BarlowTwins",
    "SimSiam",
    "VICReg",
    "MoCoV2",
    "MoCoV3",
    "DirectCLR",
    "DirectPred",
    "DirectCopy",
    "WMSE",
    "SwAV",
]


def build_method(name: str, params, head: HeadConfig, global_crops: int, backbone: nn.Module) -> Method:
    """The method registered as `name` with `params` on `backbone`, its projection head from `head`."""
    return METHODS.lookup(name).from_config(params, head, global_crops, backbone)


def display_name(name: str) -> str:
    """How tables and reports name method `name` (its class's display_name, else the name)."""
    return METHODS.lookup(name).display_name or name
