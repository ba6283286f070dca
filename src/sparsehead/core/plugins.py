"""Plugins: modules that register methods (or heads, protocols) from outside the package.

The `sparsehead` command imports every module named in the environment variable
SPARSEHEAD_PLUGINS (comma-separated, importable from sys.path / PYTHONPATH) before it reads
any config, so a method defined in one's own file is a `method.name` like the built-in ones:

    # my_method.py
    from dataclasses import dataclass
    import sparsehead.methods
    from sparsehead.core.options import opt

    @sparsehead.methods.register("mine")
    class Mine(sparsehead.methods.Method):
        display_name = "Mine"

        @dataclass
        class Params:
            scale: float = opt(1.0, "what it scales", min=0.0)

        def forward(self, x1, x2):
            ...

    SPARSEHEAD_PLUGINS=my_method sparsehead pretrain method.name=mine method.scale=2

A run made with a plugin method needs the same SPARSEHEAD_PLUGINS to be evaluated, analysed,
reported or resumed (its config names the method). Library users just import their module.
"""

from __future__ import annotations

import importlib
import os

from sparsehead.core.errors import SparseheadError

ENV = "SPARSEHEAD_PLUGINS"


class PluginError(SparseheadError, ImportError):
    """A plugin module named in SPARSEHEAD_PLUGINS that cannot be imported."""


def plugin_modules() -> list[str]:
    return [name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()]


def import_plugins() -> list[str]:
    """Import the modules of SPARSEHEAD_PLUGINS (each registers what it defines); their names."""
    names = plugin_modules()
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise PluginError(
                f"{ENV}: cannot import plugin module {name!r} ({err}); put its folder on "
                "PYTHONPATH, or fix the name in SPARSEHEAD_PLUGINS"
            ) from None
    return names
