"""The options of `sparsehead evaluate`: the shared ones declared here, the others each declared once
by the protocol that reads them. eval_options() assembles them into one dataclass whose fields are
the command's flags (core.options.add_arguments) and whose declarations check the values. It is
built when asked for, from the protocols registered then, so a plugin protocol registered after
this module was imported gets its flags too.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import ClassVar, Optional

from sparsehead.core.options import add_arguments, field_names, opt
from sparsehead.evaluate.protocol import AssembledOptions
from sparsehead.evaluate.registry import PROTOCOLS


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


def eval_options() -> type:
    """EvalOptions: one dataclass with the fields of every option set of the protocols registered now
    (the same class while they stay the same, so its instances compare equal)."""
    return _union(tuple(option_sets()))


def option_groups() -> dict[str, tuple[str, ...]]:
    """Which options each group of `sparsehead evaluate --help` shows, titled by the option sets."""
    groups: dict[str, tuple[str, ...]] = {}
    for option_set in option_sets():
        if option_set.help_group is not None:
            names = tuple(f.name for f in dataclasses.fields(option_set))
            groups[option_set.help_group] = groups.get(option_set.help_group, ()) + names
    return groups


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of `sparsehead evaluate` for the protocols registered now: the shared ones, then
    one --help group per option set (--protocol is the CLI's own, with its choices)."""
    cls, groups = eval_options(), option_groups()
    grouped = {name for names in groups.values() for name in names}
    add_arguments(parser, cls, only=tuple(f for f in field_names(cls) if f not in grouped and f != "protocol"))
    for title, names in groups.items():
        add_arguments(parser.add_argument_group(title), cls, only=names)


@functools.cache
def _union(sets: tuple[type, ...]) -> type:
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
    cls = dataclasses.make_dataclass("EvalOptions", fields, bases=(AssembledOptions,))
    cls.__module__ = __name__
    cls.__doc__ = (
        "The options of `sparsehead evaluate`, declared once: the CLI's flags, their help and the "
        "validation come from these fields (options.add_arguments / options.check)."
    )
    return cls


def __getattr__(name: str) -> type:
    """`EvalOptions`, the class eval_options() gives when it is looked up."""
    if name == "EvalOptions":
        return eval_options()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
