"""`sparsehead report`: one results table across runs."""

from __future__ import annotations

from sparsehead.cli.common import command


def add(sub):
    p = command(
        sub,
        "report",
        "one results table across runs (Markdown and CSV), mean ± std over seeds",
        "Tabulate the evaluations of several runs like Song et al. 2023 Table 1: method, head, lambda, "
        "linear top-1/top-5, k-NN (and NCC, semi-supervised when evaluated). Runs whose configs differ "
        "only in the seed are one row (mean ± sample std, percent).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_FOLDER")
    p.add_argument("--out", metavar="PREFIX", help="also write PREFIX.md and PREFIX.csv")
    p.set_defaults(run=run)


def run(args) -> int:
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
