"""PROTOCOLS: the evaluation protocols of `sparsehead evaluate` by --protocol name, one file each
(knn.py, ncc.py, linear.py, semisup.py: the protocol's maths, options, checks and source).

A new protocol subclasses Protocol (protocol.py) and is registered here, or by a plugin module
(SPARSEHEAD_PLUGINS) with PROTOCOLS.register(name)(instance) before the CLI builds its flags.
"""

from sparsehead.core.registry import Registry
from sparsehead.evaluate.knn import KNNProtocol
from sparsehead.evaluate.linear import LinearProtocol
from sparsehead.evaluate.ncc import NCCProtocol
from sparsehead.evaluate.semisup import SemisupProtocol

PROTOCOLS = Registry("protocol", "--protocol")
# In the order `sparsehead evaluate --help` lists them.
for _protocol in (KNNProtocol(), NCCProtocol(), LinearProtocol(), SemisupProtocol()):
    PROTOCOLS.register(_protocol.name)(_protocol)
