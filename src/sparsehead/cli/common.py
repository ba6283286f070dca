"""What every sub-command's parser shares: the help layout and the one meaning of --data."""

from __future__ import annotations

import argparse


def command(sub, name: str, help: str, description: str, examples: str = "", extra: str = ""):
    """A sub-command parser with its help line, description and an epilog of examples."""
    epilog = (extra + "\n\n" if extra else "") + ("examples:\n" + examples if examples else "")
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_data_option(p, what: str) -> None:
    """--data KEY=VALUE ...: the one meaning of --data (config.with_data_overrides)."""
    p.add_argument(
        "--data",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=f"{what}: keys of the data section, KEY or data.KEY, several after one --data or "
        "one per --data, e.g. --data source=imagefolder root=DIR (default: the run's)",
    )
