"""Declared options: one dataclass field per option, with its default, type, range and help.

The same declaration drives every use of an option: building a validated dataclass from a
mapping (config files, `key=value` overrides, a method's `method.<key>` parameters), the error
message of a wrong value, the `--help` text, and argparse flags for sub-commands (add_arguments).

    @dataclass
    class Params:
        temperature: float = opt(0.5, "softmax temperature", min=0.0, exclusive_min=True)
        loss: Literal["nt_xent", "huang"] = opt("nt_xent", "which loss")
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import field
from typing import Any, Literal, Optional

from sparsehead.core.errors import ConfigError

__all__ = ["opt", "build", "coerce", "describe_fields", "add_arguments", "from_arguments", "ConfigError"]


def opt(
    default,
    help: str,
    *,
    min=None,
    max=None,
    exclusive_min: bool = False,
    exclusive_max: bool = False,
    flag: Optional[str] = None,
):
    """An option with help text and an optional numeric range (`flag`: its command-line name)."""
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "exclusive_min": exclusive_min,
        "exclusive_max": exclusive_max,
        "flag": flag,
    }
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def allowed_values(tp) -> Optional[tuple]:
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    return None


def _optional(tp) -> tuple[Any, bool]:
    """(X, True) for Optional[X], (tp, False) otherwise."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def coerce(key: str, value: Any, tp, meta: dict) -> Any:
    """`value` checked against the declared type `tp` and range in `meta`; ConfigError naming `key`."""
    inner, optional = _optional(tp)
    if optional:
        return None if value is None else coerce(key, value, inner, meta)
    allowed = allowed_values(tp)
    if allowed is not None:
        if not any(value == a and type(value) is type(a) for a in allowed):  # 1 is not True
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        check_range(key, value, meta)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        check_range(key, value, meta)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is dict:  # a free-form mapping (model.timm_args): passed through, its keys strings
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: expected a mapping of names to values, e.g. {{patch_size: 4}}, got {value!r}")
        return dict(value)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):  # list[X] / tuple[X, ...]: any length, every item checked
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, e.g. [a, b], got {value!r}")
        items = [coerce(key, v, typing.get_args(tp)[0], meta) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is list:  # a bare list: two numbers, one per view
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConfigError(f"{key}: expected a list of two numbers [view1, view2], got {value!r}")
        return [coerce(key, v, float, meta) for v in value]
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - a bug in a declaration


def check_range(key, value, meta):
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("exclusive_min") and value == lo)):
        op = ">" if meta.get("exclusive_min") else ">="
        what = " (a positive integer)" if lo == 1 and isinstance(value, int) and op == ">=" else ""
        raise ConfigError(f"{key}: {value} is out of range; it must be {op} {lo}{what}")
    if hi is not None and (value > hi or (meta.get("exclusive_max") and value == hi)):
        op = "<" if meta.get("exclusive_max") else "<="
        raise ConfigError(f"{key}: {value} is out of range; it must be {op} {hi}")


def check_known_keys(values: dict, allowed: list[str], prefix: str = "", unknown=None) -> None:
    """The one check for keys a section does not declare: the first unknown key, with the allowed
    ones (or `unknown(key, allowed)`'s message)."""
    extra = set(values) - set(allowed)
    if extra:
        key = sorted(extra)[0]
        raise ConfigError(
            unknown(key, allowed) if unknown else f"{prefix}{key}: unknown key; allowed keys here: {', '.join(allowed)}"
        )


def build(cls, values: dict, prefix: str = "", unknown=None):
    """A `cls` instance from a mapping, every value checked. `unknown(key, allowed)` gives the
    message of a key `cls` does not declare (default: the allowed keys of `cls`)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_known_keys(values, list(fields), prefix, unknown)
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(f"{prefix}{name}", value, tp, fields[name].metadata)
    return cls(**kwargs)


def default_of(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def type_name(tp) -> str:
    inner, optional = _optional(tp)
    allowed = allowed_values(inner)
    kind = "|".join(map(str, allowed)) if allowed else getattr(inner, "__name__", str(inner))
    return kind + (" or null" if optional else "")


def describe_fields(cls, prefix: str, note: str = "") -> list[str]:
    """One `--help` line per option: `prefix.key (type, default D): help`."""
    hints = typing.get_type_hints(cls)
    return [
        f"  {prefix}{f.name}{note} ({type_name(hints[f.name])}, default {default_of(f)}): {f.metadata.get('help', '')}"
        for f in dataclasses.fields(cls)
    ]


# --- command-line flags from the same declarations ----------------------------------------------


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_arguments(parser, cls, only: Optional[tuple] = None, required: tuple = ()) -> None:
    """One argparse flag per field of `cls`: `--name-with-dashes`, its help and default from the
    declaration. Values are parsed as strings and checked by from_arguments (same messages as
    a config file)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        tp, _ = _optional(hints[f.name])
        default = default_of(f)
        text = f.metadata.get("help", "").replace("%", "%%")  # argparse expands % in help
        shown = default if not isinstance(default, (tuple, list)) else " ".join(map(str, default))
        if tp is bool:
            parser.add_argument(_flag(f), dest=f.name, action="store_true", default=argparse.SUPPRESS, help=text)
            continue
        kwargs: dict = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": text if "default" in text else f"{text} (default {shown if default is not None else 'none'})",
        }
        if f.name in required:
            kwargs.update(required=True, help=text)
        if allowed_values(tp):
            kwargs["choices"] = allowed_values(tp)
        if typing.get_origin(tp) in (list, tuple):
            kwargs["nargs"] = "+"
        kwargs["metavar"] = None if "choices" in kwargs else f.name.upper()
        parser.add_argument(_flag(f), **kwargs)


def _parse_text(value, tp):
    """A command-line string as the declared type (numbers as numbers), for coerce to check."""
    inner, _ = _optional(tp)
    if isinstance(value, list):
        item = typing.get_args(inner)[0] if typing.get_args(inner) else float
        return [_parse_text(v, item) for v in value]
    if inner in (int, float) and isinstance(value, str):
        try:
            return int(value) if inner is int else float(value)
        except ValueError:
            return value  # coerce names the flag and the expected type
    return value


def check(obj, key=lambda f: f.name) -> None:
    """Every field of a dataclass instance against its declaration (for instances built in code);
    `key(field)` names it in the message (e.g. its command-line flag)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        coerce(key(f), getattr(obj, f.name), hints[f.name], f.metadata)


def flag_of(f: dataclasses.Field) -> str:
    return _flag(f)


def from_arguments(cls, args: argparse.Namespace, **given):
    """A validated `cls` from parsed flags (absent flags keep their declared default)."""
    hints = typing.get_type_hints(cls)
    values = dict(given)
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name) and f.name not in values:
            raw = getattr(args, f.name)
            values[f.name] = _parse_text(raw, hints[f.name])
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = coerce(_flag(fields[name]), value, hints[name], fields[name].metadata)
    return cls(**kwargs)


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]
