"""Registries: name -> class (or function), filled by a decorator where each entry is defined.

    METHODS = Registry("method", "method.name")

    @METHODS.register("simclr")
    class SimCLR(Method): ...

The registered object gets its name as `.name`. Lookups of an unknown name raise ConfigError
naming the key and the registered names, so a new entry needs no edit anywhere else.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from sparsehead.core.errors import ConfigError

T = TypeVar("T")


class Registry(dict):
    def __init__(self, kind: str, key: str, hint: str = ""):
        super().__init__()
        self.kind, self.key, self.hint = kind, key, hint  # e.g. "method", "method.name" (for messages)

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self and self[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({self[name]!r} and {obj!r})")
            obj.name = name
            self[name] = obj
            return obj

        return decorate

    def unregister(self, name: str) -> None:
        self.pop(name, None)

    def lookup(self, name) -> object:
        if name not in self:
            raise ConfigError(f"{self.key}: {name!r} is not allowed; choose one of {', '.join(self)}{self.hint}")
        return self[name]
