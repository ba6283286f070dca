"""Methods by name. Adding one = a new file with a Method subclass + a line here + its tests."""
from .barlow_twins import BarlowTwins
from .base import Method
from .byol import BYOL
from .directclr import DirectCLR
from .directcopy import DirectCopy
from .directpred import DirectPred
from .simclr import SimCLR
from .swav import SwAV
from .wmse import WMSE

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "byol": BYOL,
    "barlow_twins": BarlowTwins,
    "directclr": DirectCLR,
    "directpred": DirectPred,
    "directcopy": DirectCopy,
    "wmse": WMSE,
    "swav": SwAV,
}


def build_method(cfg, backbone) -> Method:
    return METHODS[cfg.method.name](cfg, backbone)
