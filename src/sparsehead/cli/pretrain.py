"""`sparsehead pretrain`: train an encoder from a config (or resume a stopped run)."""

from __future__ import annotations

import json

from sparsehead import config
from sparsehead.cli.common import command


def add(sub):
    p = command(
        sub,
        "pretrain",
        "pretrain an encoder (any method, head, SparseHead setting, data set)",
        "Pretrain a backbone with a self-supervised method. Settings come from a YAML file (--config) "
        "and key=value overrides, validated before any work starts.",
        "  sparsehead pretrain --config demo\n"
        "  sparsehead pretrain --config cifar10_simclr sparsity.lam=1e-4 train.epochs=20\n"
        "  sparsehead pretrain --resume runs/my-run          # continue a stopped run exactly\n"
        "  SPARSEHEAD_PLUGINS=my_method sparsehead pretrain method.name=mine   # a plugin's method",
        "configuration keys (section.key (type, default): meaning):\n" + config.describe(),
    )
    p.add_argument("--config", help="YAML file with any of the keys below, or a shipped config's name (see configs)")
    p.add_argument(
        "--run-dir",
        help="run folder to create, or to resume when it holds a checkpoint (default: train.out_dir/train.run_name)",
    )
    p.add_argument(
        "--resume",
        metavar="RUN_FOLDER",
        help="continue a stopped run from its last good checkpoint, with the config saved in the folder "
        "(overrides only of keys that may change on resume, see docs/reliability.md; others need --force)",
    )
    force = "resume though the config (or data) differs from the run's; if no checkpoint loads, start afresh"
    p.add_argument("--force", action="store_true", help=force + " with the old history moved into RUN/previous-<time>/")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. sparsity.lam=1e-4")
    p.set_defaults(run=run)


def run(args) -> int:
    import yaml

    run_dir = args.run_dir
    if args.resume:
        if args.config or args.run_dir:
            raise config.ConfigError(
                "--resume takes the config and the folder from RUN_FOLDER; drop --config "
                "and --run-dir (give key=value overrides instead)"
            )
        from sparsehead.training.resume import resume_config

        cfg, run_dir = resume_config(args.resume, args.overrides, args.force), args.resume
    else:
        cfg = config.load(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(cfg), sort_keys=False), end="")
        return 0
    from sparsehead.training import loop

    summary = loop.pretrain(cfg, run_dir, force=args.force)
    if "run_dir" in summary:
        print(f"run folder: {summary['run_dir']}")
        print(json.dumps({k: v for k, v in summary.items() if k != "run_dir"}, indent=2))
    return 0
