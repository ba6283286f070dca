"""The configs shipped inside the package (sparsehead/configs/, which the repository's configs/ links to),
found by name: `--config cifar10_simclr` as well as a path."""

from __future__ import annotations

import os
from pathlib import Path

from sparsehead.core.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "configs"


def shipped() -> dict[str, str]:
    """Each shipped config's name (its path under SHIPPED without .yaml) and one-line purpose: the first
    line of its leading comment."""
    out = {}
    for path in sorted(SHIPPED.rglob("*.yaml")):
        first = path.read_text().splitlines()[0] if path.stat().st_size else ""
        purpose = first.lstrip("#").strip() if first.startswith("#") else ""
        if purpose and not purpose.endswith("."):  # the comment goes on: say so
            purpose = purpose.rstrip(",:;") + " ..."
        out[path.relative_to(SHIPPED).with_suffix("").as_posix()] = purpose
    return out


def listing() -> str:
    """`sparsehead configs`: one line per shipped config, its name and purpose."""
    width = max(map(len, shipped()))
    return "\n".join(f"{name:<{width}}  {purpose}" for name, purpose in shipped().items())


def add_command(sub) -> None:
    """The `sparsehead configs` sub-command."""
    p = sub.add_parser("configs", help="list the configs shipped inside sparsehead: the names --config takes")
    p.set_defaults(run=lambda args: print(listing()) or 0)


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The YAML file a --config value means: an existing file, else a shipped config by name (with or
    without .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path).removesuffix(".yaml")
    candidate = SHIPPED / f"{name}.yaml"
    if not path.is_absolute() and candidate.is_file():
        return candidate
    raise ConfigError(
        f"config file {name_or_path} does not exist and is not a shipped config's name; give a path "
        f"to a YAML file or one of: {', '.join(shipped())} (`sparsehead configs` lists them)"
    )
