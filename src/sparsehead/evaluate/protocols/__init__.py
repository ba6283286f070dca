"""The evaluation protocols of `sparsehead evaluate`, one file each, by --protocol name.

A new protocol subclasses Protocol (base.py) and is registered here, or by a plugin module
(SPARSEHEAD_PLUGINS) with PROTOCOLS.register(name)(instance) before the CLI builds its flags.
"""

from sparsehead.core.registry import Registry
from sparsehead.evaluate.protocols.base import Protocol, frozen_features
from sparsehead.evaluate.protocols.knn import KNNProtocol
from sparsehead.evaluate.protocols.linear import LinearProtocol
from sparsehead.evaluate.protocols.ncc import NCCProtocol
from sparsehead.evaluate.protocols.semisup import SemisupProtocol

PROTOCOLS = Registry("protocol", "--protocol")
# In the order `sparsehead evaluate --help` lists them.
for _protocol in (KNNProtocol(), NCCProtocol(), LinearProtocol(), SemisupProtocol()):
    PROTOCOLS.register(_protocol.name)(_protocol)

__all__ = ["PROTOCOLS", "Protocol", "frozen_features"]
