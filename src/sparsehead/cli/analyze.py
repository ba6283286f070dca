"""`sparsehead analyze`: dimensional-collapse diagnostics and the HTML report."""

from __future__ import annotations

import argparse

from sparsehead.cli.common import add_data_option, command
from sparsehead.core import options


def add(sub):
    p = command(
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
    add_data_option(p, "override the run's data settings")
    from sparsehead.analysis.analyze import AnalyzeOptions

    options.add_arguments(p, AnalyzeOptions)
    p.set_defaults(run=run)


def run(args) -> int:
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
