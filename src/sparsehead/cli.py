"""The `sparsehead` command: one sub-command per job, each a thin wrapper over the library.

Every sub-command is registered here (COMMANDS at the bottom). Options are declared once:
pretrain's as config keys (the config package, the methods' Params), evaluate's as the fields of
evaluate.options.eval_options(), turned into flags, help and validation by sparsehead.core.options.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from sparsehead import __version__, config
from sparsehead.core import options
from sparsehead.core.errors import EXIT_INTERRUPTED, Interrupted, SparseheadError


def _command(sub, name: str, help: str, description: str, examples: str = "", extra: str = ""):
    """A sub-command parser with its help line, description and an epilog of examples."""
    epilog = (extra + "\n\n" if extra else "") + ("examples:\n" + examples if examples else "")
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_data_option(p, what: str) -> None:
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


# --- pretrain -----------------------------------------------------------------------------------


def add_pretrain(sub):
    p = _command(
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
    p.set_defaults(run=run_pretrain)


def run_pretrain(args) -> int:
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


# --- evaluate and report ------------------------------------------------------------------------


def add_evaluate(sub):
    from sparsehead.evaluate.options import add_flags
    from sparsehead.evaluate.registry import PROTOCOLS

    listing = "\n".join(
        textwrap.fill(f.summary, 100, initial_indent=f"  {name:<9}", subsequent_indent=" " * 11)
        for name, f in PROTOCOLS.items()
    )
    p = _command(
        sub,
        "evaluate",
        "evaluate a trained backbone: k-NN, linear probe, semi-supervised, nearest centre",
        "Evaluate the frozen representation r of a checkpoint (and, with --with-z, the embedding z) on the "
        "run's data set or another one. Prints the numbers and writes them to RUN/eval/<protocol>.json; "
        "features are cached in RUN/features/.",
        "  sparsehead evaluate runs/demo --protocol linear\n"
        "  sparsehead evaluate runs/demo/checkpoints/ckpt-00000500.pt --protocol knn --with-z\n"
        "  sparsehead evaluate runs/c10 --protocol semisup --fractions 0.01 --epochs 5\n"
        "  sparsehead evaluate runs/c10 --protocol knn --data source=imagefolder root=/data/x",
        "protocols:\n" + listing,
    )
    p.add_argument(
        "target", metavar="RUN_FOLDER_OR_CHECKPOINT", help="a run folder (its newest checkpoint) or a checkpoint file"
    )
    p.add_argument("--protocol", required=True, choices=list(PROTOCOLS), help="the evaluation protocol")
    _add_data_option(p, "evaluate on another data set")
    add_flags(p)
    p.set_defaults(run=run_evaluate)


def run_evaluate(args) -> int:
    from sparsehead.evaluate.options import eval_options
    from sparsehead.evaluate.runner import evaluate

    opts = options.from_arguments(eval_options(), args)
    record, path = evaluate(args.target, opts, tuple(args.data))
    if path is not None:  # the first process under torchrun
        print(json.dumps({k: record[k] for k in ("r", "z") if k in record}, indent=2), f"written: {path}", sep="\n")
    return 0


def add_report(sub):
    p = _command(
        sub,
        "report",
        "one results table across runs (Markdown and CSV), mean ± std over seeds",
        "Tabulate the evaluations of several runs like Song et al. 2023 Table 1: method, head, lambda, "
        "linear top-1/top-5, k-NN (and NCC, semi-supervised when evaluated). Runs whose configs differ "
        "only in the seed are one row (mean ± sample std, percent).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_FOLDER")
    p.add_argument("--out", metavar="PREFIX", help="also write PREFIX.md and PREFIX.csv")
    p.set_defaults(run=run_report)


def run_report(args) -> int:
    from sparsehead.core.atomic import atomic_write_text
    from sparsehead.evaluate.results_table import build_table, to_csv, to_markdown

    columns, rows = build_table(args.runs)
    markdown = to_markdown(columns, rows)
    print(markdown, end="")
    if args.out:
        atomic_write_text(f"{args.out}.md", markdown)
        atomic_write_text(f"{args.out}.csv", to_csv(columns, rows))
        print(f"written: {args.out}.md, {args.out}.csv")
    return 0


# --- export -------------------------------------------------------------------------------------


def add_export(sub):
    from sparsehead.export.formats import FORMATS

    p = _command(
        sub,
        "export",
        "write a run's backbone as a plain torchvision state_dict, or for detection transfer",
        "Write the backbone of a run (its newest checkpoint) or of a checkpoint file as a torchvision ResNet "
        "state_dict without fc (--format torchvision), as the trunk of torchvision's Faster/Mask R-CNN FPN "
        "backbone (torchvision-detection) or as detectron2's ResNet pickle (detectron2), plus a .json sidecar "
        "(arch, width, stem, feature_dim, normalisation), and print the code or command that uses it. "
        "Detection formats need a width-64 ResNet with the ImageNet stem (docs/transfer.md).",
        "  sparsehead export runs/my-run --out backbone.safetensors\n"
        "  sparsehead export runs/r50 --format detectron2 --out r50.pkl\n"
        "  sparsehead export runs/r50 --format torchvision-detection --out r50-fpn-body.pt",
    )
    p.add_argument("source", metavar="RUN_FOLDER_OR_CHECKPOINT")
    p.add_argument(
        "--out", required=True, help="output file: .pt or .safetensors (torchvision formats), or .pkl (detectron2)"
    )
    p.add_argument("--format", default="torchvision", choices=list(FORMATS), help="default: torchvision")
    p.set_defaults(run=run_export)


def run_export(args) -> int:
    from sparsehead.export.formats import detection_snippet, export_backbone, loading_snippet

    meta = export_backbone(args.source, args.out, args.format)
    shape = f"width {meta['width']}, {meta['stem']} stem, " if "width" in meta else ""
    print(
        f"wrote {args.out} ({args.format}: {meta['arch']}, {shape}"
        f"{meta['feature_dim']}-d features, step {meta['step']}) and its sidecar "
        f"{Path(args.out).with_suffix('.json')}"
    )
    if args.format == "torchvision":
        print("load it without sparsehead:\n")
        print(loading_snippet(meta, args.out))
    else:
        print("use it for detection:\n")
        print(detection_snippet(meta, args.out))
    return 0


# --- analyze ------------------------------------------------------------------------------------


def add_analyze(sub):
    p = _command(
        sub,
        "analyze",
        "dimensional-collapse diagnostics + HTML report of a run, several runs, or any embeddings",
        "Eigenvalue spectra, collapsed dimensions, effective rank, RankMe, alpha-ReQ, min-max distance ratio, "
        "alignment, uniformity, class-centre metrics and head sparsity of the representation r and the "
        "embedding z on the test split. Writes analysis.json, PNG figures and a self-contained report.html "
        "(default folder: RUN/analysis).",
        "  sparsehead analyze runs/demo\n"
        "  sparsehead analyze runs/c10/checkpoints/ckpt-00001000.pt --data root=/data/cifar10\n"
        "  sparsehead analyze --compare runs/baseline runs/sparsehead --out runs/compare\n"
        "  sparsehead analyze --features emb.npy --labels labels.npy --out emb-analysis",
    )
    p.add_argument(
        "targets",
        nargs="*",
        metavar="RUN_OR_CHECKPOINT",
        help="a run folder (its newest checkpoint) or a checkpoint file; several with --compare",
    )
    _add_data_option(p, "override the run's data settings")
    from sparsehead.analysis.analyze import AnalyzeOptions

    options.add_arguments(p, AnalyzeOptions)
    p.set_defaults(run=run_analyze)


def run_analyze(args) -> int:
    from sparsehead.analysis import analyze

    args = argparse.Namespace(**{**vars(args), **vars(options.from_arguments(analyze.AnalyzeOptions, args))})
    if args.features:
        if args.targets or args.compare:
            raise analyze.AnalysisError("--features analyses a file on its own; leave out runs and --compare")
        out = analyze.analyze_features(args.features, args.labels, args.out, args.seed)
    elif args.labels:
        raise analyze.AnalysisError("--labels goes with --features (runs bring their own labels)")
    elif args.compare:
        if not args.out:
            raise analyze.AnalysisError("--compare needs --out FOLDER for the comparison report")
        out = analyze.compare_runs(args.targets, args.out, args.data, args.device)
    else:
        if len(args.targets) != 1:
            raise analyze.AnalysisError(
                f"give one run folder or checkpoint (got {len(args.targets)}); use --compare for several"
            )
        out = analyze.analyze_run(args.targets[0], args.out, args.data, args.device, args.seed)
    print(f"report: {out / 'report.html'}")
    return 0


# --- simulate -----------------------------------------------------------------------------------


def add_simulate(sub):
    p = sub.add_parser(
        "simulate",
        help="toy experiments: dimensional collapse (Jing et al. 2022) and the min-max ratio (Song et al. 2023)",
        description="collapse: a 16x16 linear layer under InfoNCE with noise augmentation of amplitude k on an "
        "8x8 block (Jing et al. 2022 Fig. 3), and a two-layer linear model with weak augmentation "
        "(Fig. 6). minmax: Song et al. 2023 Eq. 9 against dimension for i.i.d. data (Lemma 5.7) and "
        "for column-sparse vs dense projections. Writes PNG and JSON into --out.",
    )
    from sparsehead.analysis.simulate import SimulateOptions  # declared beside the simulations

    p.add_argument("experiment", choices=["collapse", "minmax"])
    options.add_arguments(p, SimulateOptions)
    p.set_defaults(run=run_simulate)


def run_simulate(args) -> int:
    from sparsehead.analysis import simulate

    opts = options.from_arguments(simulate.SimulateOptions, args)
    out = Path(opts.out)
    print("\n".join(simulate.run(args.experiment, out, opts)))
    print(f"written to {out}")
    return 0


# --- entry point --------------------------------------------------------------------------------

# the help order; `configs` lists the configs shipped inside the package, the names --config takes
COMMANDS = (add_pretrain, add_evaluate, add_report, add_analyze, add_export, add_simulate, config.names.add_command)


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


if __name__ == "__main__":
    sys.exit(main())
