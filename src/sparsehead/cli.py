"""The `sparsehead` command: one sub-command per job, each a thin wrapper over the library."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config


def _expected_errors():
    from .checkpoint import CheckpointError
    from .data.datasets import DataError
    from .export import ExportError
    from .faults import NonFiniteError
    from .train import TrainingError
    return (config.ConfigError, DataError, TrainingError, CheckpointError, NonFiniteError, ExportError)


# --- pretrain -----------------------------------------------------------------------------------

def add_pretrain(sub):
    p = sub.add_parser(
        "pretrain", help="pretrain an encoder (any method, head, SparseHead setting, data set)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pretrain a backbone with a self-supervised method. Settings come from a YAML "
                    "file (--config) and key=value overrides, validated before any work starts.",
        epilog="examples:\n"
               "  sparsehead pretrain --config configs/demo.yaml\n"
               "  sparsehead pretrain --config configs/cifar10_simclr.yaml sparsity.lam=1e-4 train.epochs=20\n"
               "  sparsehead pretrain --resume runs/my-run          # continue a stopped run exactly\n\n"
               "configuration keys (section.key (type, default): meaning):\n" + config.describe())
    p.add_argument("--config", help="YAML file with any of the keys below (default: all defaults)")
    p.add_argument("--run-dir", help="run folder to create, or to resume when it holds a checkpoint "
                                     "(default: train.out_dir/train.run_name)")
    p.add_argument("--resume", metavar="RUN_FOLDER",
                   help="continue a stopped run from its last good checkpoint, with the config saved in "
                        "the folder (overrides only of keys that may change on resume, see "
                        "docs/reliability.md; others need --force)")
    p.add_argument("--force", action="store_true",
                   help="resume even though the config (or the data set) differs from the run's")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. sparsity.lam=1e-4")
    p.set_defaults(run=run_pretrain)


def run_pretrain(args) -> int:
    import yaml
    run_dir = args.run_dir
    if args.resume:
        if args.config or args.run_dir:
            raise config.ConfigError("--resume takes the config and the folder from RUN_FOLDER; drop --config "
                                     "and --run-dir (give key=value overrides instead)")
        from .resume import resume_config
        cfg, run_dir = resume_config(args.resume, args.overrides, args.force), args.resume
    else:
        cfg = config.load(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(cfg), sort_keys=False), end="")
        return 0
    from .train import pretrain
    summary = pretrain(cfg, run_dir, force=args.force)
    if "run_dir" in summary:
        print(f"run folder: {summary['run_dir']}")
        print(json.dumps({k: v for k, v in summary.items() if k != "run_dir"}, indent=2))
    return 0


# --- export -------------------------------------------------------------------------------------

def add_export(sub):
    p = sub.add_parser(
        "export", help="write a run's backbone as a plain torchvision state_dict (.pt or .safetensors)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the backbone of a run (its newest checkpoint) or of a checkpoint file as a "
                    "torchvision ResNet state_dict without fc, plus a .json sidecar (arch, width, stem, "
                    "feature_dim, normalisation), and print the code that loads it without sparsehead.",
        epilog="example:\n  sparsehead export runs/my-run --out backbone.safetensors")
    p.add_argument("source", metavar="RUN_FOLDER_OR_CHECKPOINT")
    p.add_argument("--out", required=True, help="output file, ending in .pt or .safetensors")
    p.set_defaults(run=run_export)


def run_export(args) -> int:
    from .export import export_backbone, loading_snippet
    meta = export_backbone(args.source, args.out)
    print(f"wrote {args.out} ({meta['arch']}, width {meta['width']}, {meta['stem']} stem, "
          f"{meta['feature_dim']}-d features, step {meta['step']}) and its sidecar "
          f"{Path(args.out).with_suffix('.json')}")
    print("load it without sparsehead:\n")
    print(loading_snippet(meta, args.out))
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
    add_export(sub)
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
