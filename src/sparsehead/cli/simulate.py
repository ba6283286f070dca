"""`sparsehead simulate`: the papers' toy experiments on collapse and the min-max ratio."""

from __future__ import annotations

from pathlib import Path

from sparsehead.core import options


def add(sub):
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
    p.set_defaults(run=run)


def run(args) -> int:
    from sparsehead.analysis import simulate

    opts = options.from_arguments(simulate.SimulateOptions, args)
    out = Path(opts.out)
    print("\n".join(simulate.run(args.experiment, out, opts)))
    print(f"written to {out}")
    return 0
