"""The `sparsehead` command: one sub-command per job, each a thin wrapper over the library."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config
from .evaluate.commands import add_evaluate, add_report


def _expected_errors():
    from .analysis.report import AnalysisError
    from .checkpoint import CheckpointError
    from .data.datasets import DataError
    from .evaluate.errors import EvaluationError
    from .export import ExportError
    from .faults import NonFiniteError
    from .train import TrainingError
    return (config.ConfigError, DataError, TrainingError, CheckpointError, NonFiniteError, ExportError,
            AnalysisError, EvaluationError)


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


# --- analyze ------------------------------------------------------------------------------------

def add_analyze(sub):
    p = sub.add_parser(
        "analyze", help="dimensional-collapse diagnostics + HTML report of a run, several runs, or any embeddings",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Eigenvalue spectra, collapsed dimensions, effective rank, RankMe, alpha-ReQ, min-max "
                    "distance ratio, alignment, uniformity, class-centre metrics and head sparsity of the "
                    "representation r and the embedding z on the test split. Writes analysis.json, PNG "
                    "figures and a self-contained report.html (default folder: RUN/analysis).",
        epilog="examples:\n"
               "  sparsehead analyze runs/demo\n"
               "  sparsehead analyze runs/c10/checkpoints/ckpt-00001000.pt --data root=/data/cifar10\n"
               "  sparsehead analyze --compare runs/baseline runs/sparsehead --out runs/compare\n"
               "  sparsehead analyze --features emb.npy --labels labels.npy --out emb-analysis")
    p.add_argument("targets", nargs="*", metavar="RUN_OR_CHECKPOINT",
                   help="a run folder (its newest checkpoint) or a checkpoint file; several with --compare")
    p.add_argument("--compare", action="store_true", help="overlay the spectra of several runs (needs --out)")
    p.add_argument("--features", metavar="FILE.npy", help="analyse an (N, d) array of embeddings from any model")
    p.add_argument("--labels", metavar="FILE.npy", help="(N,) integer labels for --features (class-centre metrics)")
    p.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                   help="override the run's data settings, e.g. --data root=/data/cifar10 (repeatable)")
    p.add_argument("--out", metavar="FOLDER", help="output folder (default: RUN/analysis, or FILE-analysis)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmented views and of subsampling")
    p.set_defaults(run=run_analyze)


def run_analyze(args) -> int:
    from .analysis import report
    if args.features:
        if args.targets or args.compare:
            raise report.AnalysisError("--features analyses a file on its own; leave out runs and --compare")
        out = report.analyze_features(args.features, args.labels, args.out, args.seed)
    elif args.labels:
        raise report.AnalysisError("--labels goes with --features (runs bring their own labels)")
    elif args.compare:
        if not args.out:
            raise report.AnalysisError("--compare needs --out FOLDER for the comparison report")
        out = report.compare_runs(args.targets, args.out, args.data, args.device)
    else:
        if len(args.targets) != 1:
            raise report.AnalysisError(f"give one run folder or checkpoint (got {len(args.targets)}); "
                                       "use --compare for several")
        out = report.analyze_run(args.targets[0], args.out, args.data, args.device, args.seed)
    print(f"report: {out / 'report.html'}")
    return 0


# --- simulate -----------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_simulate(sub):
    p = sub.add_parser(
        "simulate", help="toy experiments: dimensional collapse (papers/003) and the min-max ratio (papers/000)",
        description="collapse: a 16x16 linear layer under InfoNCE with noise augmentation of amplitude k on an "
                    "8x8 block (papers/003 Fig. 3), and a two-layer linear model with weak augmentation "
                    "(Fig. 6). minmax: papers/000 Eq. 9 against dimension for i.i.d. data (Lemma 5.7) and "
                    "for column-sparse vs dense projections. Writes PNG and JSON into --out.")
    p.add_argument("experiment", choices=["collapse", "minmax"])
    p.add_argument("--out", default="simulations", help="output folder (default: simulations)")
    p.add_argument("--steps", type=_positive_int, default=1000,
                   help="collapse: SGD steps of the one-layer runs (two-layer: twice as many)")
    p.add_argument("--samples", type=_positive_int, default=1000, help="minmax: points per data set")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_simulate)


def run_simulate(args) -> int:
    from . import simulate
    out = Path(args.out)
    if args.experiment == "collapse":
        result = simulate.run_collapse(out, simulate.ToySetup(steps=args.steps, seed=args.seed),
                                       two_layer_steps=2 * args.steps)
        single = result["strong_augmentation"]
        for k, ratio in zip(single["amplitudes"], single["final_min_over_max"]):
            print(f"one layer, k={k:g}: smallest/largest singular value of W = {ratio:.3g}")
        two = result["two_layer"]
        print(f"two layers, k={two['amplitude']:g}: smallest/largest singular value of W2 W1 = "
              f"{two['final_min_over_max']:.3g} (one layer, same setting: "
              f"{two['single_layer_same_setup_min_over_max']:.3g})")
    else:
        result = simulate.run_minmax(out, samples=args.samples, seed=args.seed)
        iid = result["iid"]
        print("i.i.d. Gaussian, mean min-max ratio by dimension: " +
              ", ".join(f"d={d}: {m:.3g}" for d, m in zip(iid["dims"], iid["gaussian"])))
    print(f"written to {out}")
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
    add_analyze(sub)
    add_export(sub)
    add_simulate(sub)
    return parser


def main(argv=None) -> int:
    from .errors import SparseheadError
    from .plugins import import_plugins
    try:
        import_plugins()  # before the parser: --help lists the parameters of plugin methods too
    except SparseheadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
