"""The `--toy` flag every benchmark has: the same code path at tiny size on the CPU, in seconds.

tests/test_benchmarks.py runs each benchmark's toy mode, so a benchmark that no longer runs against
the package fails a test instead of rotting. Not a benchmark itself (leading underscore).
"""

from __future__ import annotations

import argparse


def parse_args(parser: argparse.ArgumentParser, toy: dict, argv=None) -> argparse.Namespace:
    """Parse argv; with --toy the defaults become `toy`'s values (options given explicitly still win)."""
    parser.add_argument(
        "--toy", action="store_true", help="tiny sizes on the CPU in seconds: every step and output of the full run"
    )
    args = parser.parse_args(argv)
    unknown = toy.keys() - vars(args).keys()
    if unknown:
        raise ValueError(f"toy sizes for options the parser lacks: {sorted(unknown)}")
    if args.toy:
        parser.set_defaults(**toy)
        args = parser.parse_args(argv)
    return args
