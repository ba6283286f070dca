"""Methods by name: each is one file, registered with `@sparsehead.methods.register("name")`.

Importing this package registers the built-in methods; a plugin module registers its own the
same way (see sparsehead.plugins). `METHODS` maps every registered name to its class.
"""
# Imported in this order so that tables list the methods in it (the registry keeps import order).
from . import simclr, byol, barlow_twins, simsiam, vicreg, moco_v2, moco_v3  # noqa: F401,I001
from . import directclr, directpred, directcopy, wmse, swav  # noqa: F401,I001
from .barlow_twins import BarlowTwins
from .base import METHODS, Method, MethodOutput, params_of, register
from .byol import BYOL
from .directclr import DirectCLR
from .directcopy import DirectCopy
from .directpred import DirectPred
from .moco_v2 import MoCoV2
from .moco_v3 import MoCoV3
from .simclr import SimCLR
from .simsiam import SimSiam
from .swav import SwAV
from .vicreg import VICReg
from .wmse import WMSE

__all__ = ["METHODS", "Method", "MethodOutput", "register", "params_of", "build_method", "display_name",
           "SimCLR", "BYOL", "BarlowTwins", "SimSiam", "VICReg", "MoCoV2", "MoCoV3", "DirectCLR",
           "DirectPred", "DirectCopy", "WMSE", "SwAV"]


def build_method(cfg, backbone) -> Method:
    """The method `cfg.method.name` on `backbone`, its parameters and head from `cfg`."""
    return METHODS.lookup(cfg.method.name).from_config(cfg, backbone)


def display_name(name: str) -> str:
    """How tables and reports name method `name` (its class's display_name, else the name)."""
    return METHODS.lookup(name).display_name or name
