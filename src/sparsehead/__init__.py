"""sparsehead: self-supervised learning around the projection head.

SparseHead (an L2,1 penalty that sparsifies the projection head, Song et al. 2023) on top of
SimCLR, BYOL, Barlow Twins and more, with evaluation and dimensional-collapse diagnostics.
"""

__version__ = "0.1.0"


import importlib
import sys
import types


def _api() -> types.ModuleType:
    # By name, not an import statement: the lower layers import this package for __version__ alone, and
    # the layering contract would read a static import as their path to the top layer's api.
    return importlib.import_module("sparsehead.api")


class _Package(types.ModuleType):
    """`sparsehead.pretrain`, `.evaluate` and `.load_backbone` are the Python API (sparsehead.api), imported on
    first use so that `import sparsehead` stays cheap. `evaluate` is also a sub-package's name: importing it
    sets this attribute, so a property keeps the function here (the sub-package stays in sys.modules)."""

    @property
    def evaluate(self):
        return _api().evaluate

    @evaluate.setter
    def evaluate(self, package):  # the import system's binding of the sparsehead.evaluate sub-package
        pass

    def __getattr__(self, name: str):
        if name in ("pretrain", "load_backbone"):
            return getattr(_api(), name)
        raise AttributeError(f"module 'sparsehead' has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
