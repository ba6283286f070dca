"""`sparsehead evaluate`: score a run's frozen representation with one evaluation protocol."""

from __future__ import annotations

import json
import textwrap

from sparsehead.cli.common import add_data_option, command
from sparsehead.core import options


def add(sub):
    from sparsehead.evaluate.options import add_flags
    from sparsehead.evaluate.registry import PROTOCOLS

    listing = "\n".join(
        textwrap.fill(f.summary, 100, initial_indent=f"  {name:<9}", subsequent_indent=" " * 11)
        for name, f in PROTOCOLS.items()
    )
    p = command(
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
    add_data_option(p, "evaluate on another data set")
    add_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from sparsehead.evaluate.options import eval_options
    from sparsehead.evaluate.runner import evaluate

    opts = options.from_arguments(eval_options(), args)
    record, path = evaluate(args.target, opts, tuple(args.data))
    if path is not None:  # the first process under torchrun
        print(json.dumps({k: record[k] for k in ("r", "z") if k in record}, indent=2), f"written: {path}", sep="\n")
    return 0
