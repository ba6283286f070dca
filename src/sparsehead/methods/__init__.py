"""Methods by name. Adding one = a new file with a Method subclass + a line here + its tests."""
from .barlow_twins import BarlowTwins
from .base import Method
from .byol import BYOL
from .simclr import SimCLR

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "byol": BYOL,
    "barlow_twins": BarlowTwins,
}


def build_method(cfg, backbone) -> Method:
    return METHODS[cfg.method.name](cfg, backbone)
