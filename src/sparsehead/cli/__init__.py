"""The `sparsehead` command: one sub-command per job, each a thin wrapper over the library.

Each sub-command is one module here with `add(sub)` (its parser) and `run(args)`; COMMANDS lists
them in the help's order. Options are declared once: pretrain's as config keys (the config package,
the methods' Params), evaluate's as the fields of evaluate.options.eval_options(), turned into
flags, help and validation by sparsehead.core.options.
"""

from __future__ import annotations

import argparse
import sys

from sparsehead import __version__, config
from sparsehead.cli import analyze, evaluate, export, pretrain, report, shard, simulate
from sparsehead.core.errors import EXIT_INTERRUPTED, Interrupted, SparseheadError

# the help order; `configs` lists the configs shipped inside the package, the names --config takes
COMMANDS = (
    pretrain.add,
    evaluate.add,
    report.add,
    analyze.add,
    export.add,
    shard.add,
    simulate.add,
    config.names.add_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsehead",
        description="Self-supervised representation learning around the projection head: "
        "SparseHead (L2,1-sparse heads) on SimCLR / BYOL / Barlow Twins, with evaluation "
        "and dimensional-collapse diagnostics. `sparsehead <command> --help` for details. "
        "Plugin modules named in SPARSEHEAD_PLUGINS (comma-separated) are imported first.",
    )
    parser.add_argument("--version", action="version", version=f"sparsehead {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    from sparsehead.core.plugins import import_plugins

    try:
        import_plugins()  # before the parser: --help lists the parameters of plugin methods too
        args = build_parser().parse_args(argv)
        return args.run(args)
    except Interrupted as err:  # its progress was saved: exit 75 (EX_TEMPFAIL), "continue me"
        print(f"preempted: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SparseheadError as err:  # every error with a message for the user (errors.py)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
