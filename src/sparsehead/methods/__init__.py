"""Methods by name. Adding one = a new file with a Method subclass + a line here + its tests."""
from .barlow_twins import BarlowTwins
from .base import Method
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

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "byol": BYOL,
    "barlow_twins": BarlowTwins,
    "simsiam": SimSiam,
    "vicreg": VICReg,
    "moco_v2": MoCoV2,
    "moco_v3": MoCoV3,
    "directclr": DirectCLR,
    "directpred": DirectPred,
    "directcopy": DirectCopy,
    "wmse": WMSE,
    "swav": SwAV,
}


def build_method(cfg, backbone) -> Method:
    return METHODS[cfg.method.name](cfg, backbone)
