"""EvalOptions, the options of `sparsehead evaluate`: the shared ones declared here, the others
each declared once by the protocol that reads them, assembled into one dataclass whose fields
are the command's flags (core.options.add_arguments) and whose declarations check the values.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import ClassVar, Optional

from sparsehead.core.options import opt
from sparsehead.evaluate.protocols import PROTOCOLS


@dataclass
class SharedOptions:
    """The options of every protocol (shown outside the protocols' help groups)."""

    help_group: ClassVar[Optional[str]] = None
    protocol: str = opt("knn", "the evaluation protocol: a name registered in PROTOCOLS (see the list below)")
    with_z: bool = opt(False, "also evaluate the embedding z = h(r) (frozen-feature protocols)")
    device: str = opt("auto", "auto (cuda if available), cpu, cuda, cuda:N")
    resize: bool = opt(False, "accept images of another size than the checkpoint's, resized to it")
    seed: int = opt(0, "validation split, label subsets, fine-tuning")


def option_sets() -> list[type]:
    """SharedOptions, each protocol's own options in registry order, then the sets protocols share."""
    own = [p.Options for p in PROTOCOLS.values() if p.Options is not None]
    shared = [s for p in PROTOCOLS.values() for s in p.shared_options]
    return list(dict.fromkeys([SharedOptions, *own, *shared]))


def _union(sets: list[type]) -> type:
    fields = []
    for option_set in sets:
        hints = typing.get_type_hints(option_set)
        for f in dataclasses.fields(option_set):
            fields.append(
                (
                    f.name,
                    hints[f.name],
                    dataclasses.field(default=f.default, default_factory=f.default_factory, metadata=f.metadata),
                )
            )
    cls = dataclasses.make_dataclass("EvalOptions", fields)
    cls.__module__ = __name__
    cls.__doc__ = (
        "The options of `sparsehead evaluate`, declared once: the CLI's flags, their help and the "
        "validation come from these fields (options.add_arguments / options.check)."
    )
    return cls


def _groups(sets: list[type]) -> dict[str, tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {}
    for option_set in sets:
        if option_set.help_group is not None:
            names = tuple(f.name for f in dataclasses.fields(option_set))
            groups[option_set.help_group] = groups.get(option_set.help_group, ()) + names
    return groups


EvalOptions = _union(option_sets())
# Which options each group of `sparsehead evaluate --help` shows, titled by the option sets.
OPTION_GROUPS = _groups(option_sets())
