"""The `sparsehead` command: one sub-command per job, each a thin wrapper over the library."""
from __future__ import annotations

import argparse
import json
import sys

from . import config
from .evaluate.commands import add_evaluate, add_report


def _expected_errors():
    from .checkpoint import CheckpointError
    from .data.datasets import DataError
    from .evaluate.errors import EvaluationError
    from .train import TrainingError
    return (config.ConfigError, DataError, TrainingError, CheckpointError, EvaluationError)


# --- pretrain -----------------------------------------------------------------------------------

def add_pretrain(sub):
    p = sub.add_parser(
        "pretrain", help="pretrain an encoder (any method, head, SparseHead setting, data set)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pretrain a backbone with a self-supervised method. Settings come from a YAML "
                    "file (--config) and key=value overrides, validated before any work starts.",
        epilog="examples:\n"
               "  sparsehead pretrain --config configs/demo.yaml\n"
               "  sparsehead pretrain --config configs/cifar10_simclr.yaml sparsity.lam=1e-4 train.epochs=20\n\n"
               "configuration keys (section.key (type, default): meaning):\n" + config.describe())
    p.add_argument("--config", help="YAML file with any of the keys below (default: all defaults)")
    p.add_argument("--run-dir", help="run folder to create, or to resume when it holds a checkpoint "
                                     "(default: train.out_dir/train.run_name)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. sparsity.lam=1e-4")
    p.set_defaults(run=run_pretrain)


def run_pretrain(args) -> int:
    import yaml
    cfg = config.load(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(cfg), sort_keys=False), end="")
        return 0
    from .train import pretrain
    summary = pretrain(cfg, args.run_dir)
    if "run_dir" in summary:
        print(f"run folder: {summary['run_dir']}")
        print(json.dumps({k: v for k, v in summary.items() if k != "run_dir"}, indent=2))
    return 0


# --- entry point --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsehead",
        description="Self-supervised representation learning around the projection head: "
                    "SparseHead (L2,1-sparse heads) on SimCLR / BYOL / Barlow Twins, with evaluation "
                    "and dimensional-collapse diagnostics. `sparsehead <command> --help` for details.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    add_pretrain(sub)
    add_evaluate(sub)
    add_report(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except _expected_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
