"""A Config from YAML, from nested dicts and from `key=value` overrides, and back to YAML; the
--help text of every key. Every value is checked against its declaration (core.options)."""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Optional

import yaml

from sparsehead.config import names
from sparsehead.config.checks import validate
from sparsehead.config.migration import migrate
from sparsehead.config.sections import Config, MethodConfig
from sparsehead.core import options
from sparsehead.core.errors import ConfigError
from sparsehead.methods import METHODS
from sparsehead.models.heads import HEADS


def yaml_number(value):
    """YAML 1.1 reads 1e-4 (no dot) and 1.0e4 (no exponent sign) as strings: a string with an
    exponent or a dot that Python reads as a float is that number. The one rule for config files
    and overrides."""
    if isinstance(value, str) and any(c in value.lower() for c in "e."):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def describe_yaml_error(err: yaml.YAMLError) -> str:
    """A YAML syntax error on one line: where, and what the parser expected."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(err).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _yaml_numbers(values):
    if isinstance(values, dict):
        return {k: _yaml_numbers(v) for k, v in values.items()}
    return yaml_number(values)


def _build(values: dict) -> Config:
    if not isinstance(values, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {values!r}")
    options.check_known_keys(values, [f.name for f in dataclasses.fields(Config)])
    hints = typing.get_type_hints(Config)
    kwargs = {
        name: (_build_method(value) if name == "method" else options.build(hints[name], value, f"{name}."))
        for name, value in values.items()
    }
    if "head" in kwargs:
        HEADS.lookup(kwargs["head"].kind)  # a registered head
    return Config(**kwargs)


def _build_method(values: dict) -> MethodConfig:
    """method.name, then the keys of that method's Params, checked against its declarations."""
    if not isinstance(values, dict):
        raise ConfigError(f"method: expected a mapping of keys, got {values!r}")
    values = dict(values)
    name = values.pop("name", MethodConfig.name)
    cls = METHODS.lookup(name)

    def unknown(key, allowed):
        owners = [n for n, c in METHODS.items() if key in c.param_names()]
        where = f" (a key of {', '.join(owners)})" if owners else ""
        return (
            f"method.{key}: not a parameter of method.name={name}{where}; the keys of {name} are: "
            f"{', '.join(['name', *allowed])}"
        )

    # null for a parameter that is not optional means the method's own default (method.temperature=null)
    required = {
        f.name
        for f in dataclasses.fields(cls.Params)
        if typing.get_origin(typing.get_type_hints(cls.Params)[f.name]) is not typing.Union
    }
    values = {k: v for k, v in values.items() if not (v is None and k in required)}
    return MethodConfig(name, options.build(cls.Params, values, "method.", unknown))


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. sparsity.lam=1e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {err}") from None
    return key.strip().split("."), yaml_number(value)


def merge(base: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` overrides to a nested dict (a copy)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for text in overrides:
        path, value = _parse_override(text)
        if len(path) == 3 and _is_mapping_key(path[0], path[1]):  # model.timm_args.patch_size=4
            section = out.setdefault(path[0], {})
            section[path[1]] = {**(section.get(path[1]) or {}), path[2]: value}
            continue
        if len(path) != 2:
            raise ConfigError(
                f"override {text!r}: keys have the form section.key, e.g. train.epochs=10; "
                f"sections: {', '.join(f.name for f in dataclasses.fields(Config))}"
            )
        section = out.setdefault(path[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"{path[0]}: expected a mapping")
        section[path[1]] = value
    return out


def _is_mapping_key(section: str, key: str) -> bool:
    """A free-form mapping option (declared `dict`), whose own keys overrides may name."""
    hints = typing.get_type_hints(Config)
    if section not in hints or not dataclasses.is_dataclass(hints[section]):
        return False
    return typing.get_type_hints(hints[section]).get(key) is dict


def from_dict(values: dict, check_paths: bool = True) -> Config:
    """A validated Config; check_paths=False for configs saved by a run on another machine."""
    cfg = _build(_yaml_numbers(values or {}))
    validate(cfg, check_paths)
    return cfg


def from_saved(values: dict, schema: int) -> Config:
    """The config a run saved (config.yaml or a checkpoint's), paths not checked."""
    return from_dict(migrate(values or {}, schema), check_paths=False)


def load(path: Optional[str | os.PathLike] = None, overrides: Optional[list[str]] = None) -> Config:
    """Read a YAML config (a path or a shipped config's name; none: the defaults), apply overrides and
    validate everything."""
    values: dict = {}
    if path is not None:
        path = names.resolve(path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except (OSError, ValueError) as err:  # unreadable, or not text (a binary file)
            raise ConfigError(f"config file {path} cannot be read as text ({err}); give a YAML file") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML ({describe_yaml_error(err)})") from None
        if not isinstance(values, dict):
            raise ConfigError(
                f"config file {path} holds a {type(values).__name__}, not a mapping of sections; write it as "
                "`section:` lines with `key: value` under each (see the configs/ folder)"
            )
    return from_dict(merge(values, overrides or []))


def with_data_overrides(cfg: Config, texts: typing.Sequence[str]) -> Config:
    """`cfg` with `--data KEY=VALUE` overrides of its data section (KEY or data.KEY), validated with
    the paths checked: the one meaning of --data for evaluate and analyze."""
    full = []
    for text in texts:
        if "=" not in text:
            raise ConfigError(f"--data {text!r}: expected KEY=VALUE, e.g. --data root=/path/to/data")
        key = text.split("=", 1)[0]
        if "." in key and not key.startswith("data."):
            raise ConfigError(
                f"--data {text!r}: only data.* keys can be changed, e.g. --data source=imagefolder root=/path/to/images"
            )
        full.append(text if key.startswith("data.") else f"data.{text}")
    try:
        return from_dict(merge(to_dict(cfg), full), check_paths=True)
    except ConfigError as err:
        raise ConfigError(
            f"{err} (the run's saved data settings; change them with --data KEY=VALUE, e.g. --data root=/path/to/data)"
        ) from None


def to_dict(cfg: Config) -> dict:
    """Plain nested dicts (the layout of config.yaml): method as {name, its parameters}."""
    out = {}
    for f in dataclasses.fields(Config):
        section = getattr(cfg, f.name)
        out[f.name] = (
            {"name": section.name, **dataclasses.asdict(section.params)}
            if f.name == "method"
            else dataclasses.asdict(section)
        )
    return out


def save(cfg: Config, path: str | os.PathLike) -> None:
    from sparsehead.core.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe() -> str:
    """Every key with its type, default and help: the body of `sparsehead pretrain --help`."""
    lines = []
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        lines.append(f"{section.name}:")
        if section.name != "method":
            lines += options.describe_fields(hints[section.name], f"{section.name}.")
            if section.name == "head":
                lines.append(
                    "  head.kind values, with the head.* keys each reads: "
                    + ", ".join(f"{name} ({' '.join(build.uses) or '-'})" for name, build in HEADS.items())
                )
            continue
        lines.append(
            f"  method.name ({'|'.join(METHODS)}, default {MethodConfig.name}): self-supervised "
            "method; the method.<key> lines below are the parameters of the method in brackets"
        )
        for name, cls in METHODS.items():
            lines += options.describe_fields(cls.Params, "method.", f" [{name}]")
    return "\n".join(lines)
