"""The `sparsehead evaluate` and `sparsehead report` sub-commands (registered by cli.py)."""
from __future__ import annotations

import argparse
import json


def add_evaluate(sub) -> None:
    from .runner import LINEAR_RECIPES, PROTOCOLS
    p = sub.add_parser(
        "evaluate", help="evaluate a trained backbone: k-NN, linear probe, semi-supervised, nearest centre",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate the frozen representation r of a checkpoint (and, with --with-z, the "
                    "embedding z) on the run's data set or another one. Prints the numbers and writes "
                    "them to RUN/eval/<protocol>.json; features are cached in RUN/features/.",
        epilog="protocols:\n"
               "  knn      cosine k-NN: k=5 majority vote (the SparseHead paper) and k=200 weighted\n"
               "           exp(sim/0.1) (InstDisc/MoCo monitor)\n"
               "  linear   logistic regression on standardised frozen features, weight decay chosen on\n"
               "           a validation split of the training set (full-batch L-BFGS); or the classic\n"
               "           SGD over augmented images (--linear-recipe sgd-augment, 100 epochs)\n"
               "  semisup  fine-tune backbone + linear classifier on class-balanced 1% and 10% label\n"
               "           subsets (saved in RUN/splits/); 20 epochs, lr 0.005 / 0.5, SGD, cosine\n"
               "  ncc      nearest class centre, raw and L2-normalised features\n\n"
               "examples:\n"
               "  sparsehead evaluate runs/demo --protocol linear\n"
               "  sparsehead evaluate runs/demo/checkpoints/ckpt-00000500.pt --protocol knn --with-z\n"
               "  sparsehead evaluate runs/c10 --protocol semisup --fractions 0.01 --epochs 5\n"
               "  sparsehead evaluate runs/c10 --protocol knn --data source=imagefolder root=/data/x")
    p.add_argument("target", metavar="RUN_FOLDER_OR_CHECKPOINT",
                   help="a run folder (its newest checkpoint) or a checkpoint file")
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument("--data", nargs="+", default=[], metavar="KEY=VALUE",
                   help="evaluate on another data set: keys of the data section, e.g. "
                        "--data source=imagefolder root=DIR (default: the run's data set)")
    p.add_argument("--with-z", action="store_true", help="also evaluate the embedding z = h(r)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--resize", action="store_true",
                   help="accept images of another size than the checkpoint's, resized to it")
    p.add_argument("--seed", type=int, default=0, help="validation split, label subsets, fine-tuning")
    g = p.add_argument_group("knn")
    g.add_argument("--k", type=int, default=5, help="neighbours of the majority vote (default 5)")
    g.add_argument("--k-weighted", type=int, default=200, help="neighbours of the weighted vote (200)")
    g.add_argument("--temperature", type=float, default=0.1, help="weighted vote: exp(sim / T) (0.1)")
    g = p.add_argument_group("linear")
    g.add_argument("--linear-recipe", choices=LINEAR_RECIPES, default="lbfgs")
    g.add_argument("--weight-decay", type=float,
                   help="fixed L2 weight decay (default: chosen on a validation split of the training set)")
    g.add_argument("--val-fraction", type=float, default=0.2, help="validation share of the training set")
    g = p.add_argument_group("semisup and sgd-augment (default: the protocol's published recipe)")
    g.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1], help="label fractions (semisup)")
    g.add_argument("--epochs", type=int, help="epochs (semisup 20, sgd-augment 100)")
    g.add_argument("--batch-size", type=int, help="batch size (256)")
    g.add_argument("--lr-head", type=float, help="classifier learning rate (semisup 0.5, sgd-augment 0.1)")
    g.add_argument("--lr-backbone", type=float, help="backbone learning rate (semisup 0.005)")
    g.add_argument("--train-augment", choices=["run", "crop-flip"],
                   help="training views: the run's augmentation (semisup default) or its crop and "
                        "flip only (sgd-augment default)")
    p.set_defaults(run=run_evaluate)


def run_evaluate(args) -> int:
    from .runner import EvalOptions, evaluate
    opts = EvalOptions(
        protocol=args.protocol, with_z=args.with_z, device=args.device, resize=args.resize,
        seed=args.seed, k=args.k, k_weighted=args.k_weighted, temperature=args.temperature,
        linear_recipe=args.linear_recipe, weight_decay=args.weight_decay, val_fraction=args.val_fraction,
        epochs=args.epochs, batch_size=args.batch_size, lr_head=args.lr_head,
        lr_backbone=args.lr_backbone, train_augment=args.train_augment, fractions=tuple(args.fractions))
    # `root=DIR` means data.root=DIR; a key of another section is refused by evaluate().
    overrides = tuple(o if "." in o.split("=", 1)[0] else f"data.{o}" for o in args.data)
    record, path = evaluate(args.target, opts, overrides)
    print(json.dumps({k: record[k] for k in ("r", "z") if k in record}, indent=2))
    print(f"written: {path}")
    return 0


def add_report(sub) -> None:
    p = sub.add_parser(
        "report", help="one results table across runs (Markdown and CSV), mean ± std over seeds",
        description="Tabulate the evaluations of several runs like papers/000 Table 1: method, head, "
                    "lambda, linear top-1/top-5, k-NN (and NCC, semi-supervised when evaluated). Runs "
                    "whose configs differ only in the seed are one row (mean ± sample std, percent).")
    p.add_argument("runs", nargs="+", metavar="RUN_FOLDER")
    p.add_argument("--out", metavar="PREFIX", help="also write PREFIX.md and PREFIX.csv")
    p.set_defaults(run=run_report)


def run_report(args) -> int:
    from ..io import atomic_write_text
    from .table import build_table, to_csv, to_markdown
    columns, rows = build_table(args.runs)
    markdown = to_markdown(columns, rows)
    print(markdown, end="")
    if args.out:
        atomic_write_text(f"{args.out}.md", markdown)
        atomic_write_text(f"{args.out}.csv", to_csv(columns, rows))
        print(f"written: {args.out}.md, {args.out}.csv")
    return 0
