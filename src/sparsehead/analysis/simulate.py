"""Toy experiments of the papers, small enough for a CPU in seconds (formulas: docs/references.md, diagnostics).

collapse (Jing et al. 2022, Jing et al., Fig. 3 and Fig. 6): a linear model z = W x, or z = W2 W1 x, trained
with the InfoNCE loss of the paper's Eq. 2 on isotropic Gaussian inputs; the positive view adds
Gaussian noise with covariance blockdiag(0, k I) (noise on the last `block` coordinates only).
  - one layer, several amplitudes k: strong augmentation makes singular values of W vanish (Fig. 3);
  - two layers, weak augmentation: the smallest singular values barely grow, so W2 W1 and the
    embedding covariance become low-rank anyway (implicit regularisation, Fig. 6).
The paper states neither learning rate, steps, batch size nor initialisation; the choices here
(ToySetup defaults) are stated in every output JSON.

minmax (Song et al. 2023, Eq. 9 and Lemma 5.7): the min-max distance ratio of i.i.d. points falls towards 0
as the dimension grows; a column-sparse projection (few input features used) keeps it higher
than a dense one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sparsehead.analysis import min_max_ratio, plots
from sparsehead.core.atomic import atomic_write_json
from sparsehead.core.options import opt


@dataclass
class ToySetup:
    dim: int = 16  # inputs and every weight matrix are dim x dim (paper: 16x16)
    block: int = 8  # the augmented coordinates (paper: an 8x8 block)
    batch: int = 128  # a fresh batch of N(0, I) inputs every step
    steps: int = 1000
    lr: float = 0.1  # plain SGD, no momentum or weight decay (as the paper)
    temperature: float = 1.0  # logits -||z_i - z_j||^2 / (2 tau); tau = 1 is the paper's Eq. 2
    seed: int = 0
    records: int = 100  # singular values are recorded this many times over training


def infonce_distance(z: torch.Tensor, z_pos: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Jing et al. 2022 Eq. 2, averaged over anchors (batched over leading dims):
    -log exp(-|z_i - z_i'|^2 / 2tau) / (sum_{j != i} exp(-|z_i - z_j|^2 / 2tau) + exp(-|z_i - z_i'|^2 / 2tau)),
    the negatives z_j being the other samples of the anchor's own branch."""
    n = z.shape[-2]
    neg = -torch.cdist(z, z).pow(2) / (2 * temperature)
    neg = neg.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    pos = -(z - z_pos).pow(2).sum(-1) / (2 * temperature)
    return (torch.logsumexp(torch.cat([pos.unsqueeze(-1), neg], -1), -1) - pos).mean(-1)


def random_orthogonal(dim: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed


def train_linear(amplitudes: Sequence[float], layers: int, init_singular_values: torch.Tensor, setup: ToySetup) -> dict:
    """Train one linear model per amplitude k, all at once (independent runs batched along dim 0).
    Returns the recorded steps and the singular values of every layer and of the product."""
    gen = torch.Generator().manual_seed(setup.seed)
    runs, d = len(amplitudes), setup.dim
    weights = []
    for _ in range(layers):  # the same initial matrices for every k: only the augmentation differs
        w = random_orthogonal(d, gen) @ torch.diag(init_singular_values.double()) @ random_orthogonal(d, gen).T
        weights.append(torch.nn.Parameter(w.expand(runs, d, d).clone()))
    opt = torch.optim.SGD(weights, lr=setup.lr)
    noise_std = torch.zeros(runs, 1, d, dtype=torch.float64)
    noise_std[:, 0, d - setup.block :] = torch.tensor(amplitudes, dtype=torch.float64).sqrt()[:, None]
    record_at = set(np.unique(np.linspace(0, setup.steps, setup.records + 1).round().astype(int)).tolist())
    steps, history = [], {f"W{i + 1}": [] for i in range(layers)}
    history["product"] = []

    def record(step):
        steps.append(step)
        with torch.no_grad():
            for i, w in enumerate(weights):
                history[f"W{i + 1}"].append(torch.linalg.svdvals(w).numpy())
            history["product"].append(torch.linalg.svdvals(product()).numpy())

    def product():
        w = weights[0]
        for layer in weights[1:]:
            w = layer @ w
        return w

    for step in range(setup.steps):
        if step in record_at:
            record(step)
        x = torch.randn(setup.batch, d, generator=gen, dtype=torch.float64)
        x_pos = x + torch.randn(setup.batch, d, generator=gen, dtype=torch.float64) * noise_std
        w = product()
        loss = infonce_distance(x @ w.transpose(1, 2), x_pos @ w.transpose(1, 2), setup.temperature)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # the runs are independent: summing keeps each one's own gradient
        opt.step()
        if not torch.isfinite(loss).all():
            raise FloatingPointError(f"the toy model diverged at step {step + 1}; lower the learning rate")
    record(setup.steps)
    return {"steps": steps, **{k: np.stack(v, 1) for k, v in history.items()}}  # (runs, T, dim)


def strong_augmentation(
    amplitudes: Sequence[float] = (0.0, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0), setup: ToySetup = ToySetup()
) -> dict:
    """Jing et al. 2022 Fig. 3: one 16x16 linear layer, orthogonal init (W(0)^T W(0) = I as in the
    paper's proof), for each augmentation amplitude k."""
    result = train_linear(amplitudes, 1, torch.ones(setup.dim), setup)
    final = result["W1"][:, -1]
    return {
        "setup": asdict(setup),
        "init": "orthogonal",
        "amplitudes": list(amplitudes),
        "steps": result["steps"],
        "singular_values": result["W1"].tolist(),
        "final_singular_values": final.tolist(),
        "final_min_over_max": (final.min(1) / final.max(1)).tolist(),
    }


def two_layer(amplitude: float = 0.1, init_scale: float = 0.5, setup: ToySetup = ToySetup(steps=2000)) -> dict:
    """Jing et al. 2022 Fig. 6: z = W2 W1 x with weak augmentation. Each W_l starts as U diag(s) V^T with
    distinct singular values s = init_scale x logspace(0, -1, dim) (the paper initialises with
    non-degenerate singular values). The embedding covariance is W2 W1 (W2 W1)^T, exact for
    N(0, I) inputs; its eigenvalues are the squared singular values of the product."""
    s = init_scale * torch.logspace(0, -1, setup.dim, dtype=torch.float64)
    result = train_linear([amplitude], 2, s, setup)
    product = result["product"][0]
    single = train_linear([amplitude], 1, s, setup)["W1"][0]  # the same data and init, one layer
    return {
        "setup": asdict(setup),
        "amplitude": amplitude,
        "init": f"U diag({init_scale} x logspace(0,-1)) V^T",
        "steps": result["steps"],
        "W1": result["W1"][0].tolist(),
        "W2": result["W2"][0].tolist(),
        "product": product.tolist(),
        "embedding_covariance": (product**2).tolist(),
        "final_min_over_max": float(product[-1].min() / product[-1].max()),
        "single_layer_same_setup_min_over_max": float(single[-1].min() / single[-1].max()),
    }


def run_collapse(
    out_dir: str | Path,
    setup: ToySetup = ToySetup(),
    amplitudes: Sequence[float] = (0.0, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0),
    two_layer_steps: int = 2000,
) -> dict:
    """Both collapse experiments -> collapse.json, collapse_strong_augmentation.png, collapse_two_layer.png."""
    out = Path(out_dir)
    single = strong_augmentation(amplitudes, setup)
    two = two_layer(setup=ToySetup(**{**asdict(setup), "steps": two_layer_steps}))
    strongest = int(np.argmax(amplitudes))
    fig = plots.amplitude_figure(
        amplitudes,
        np.asarray(single["final_singular_values"]),
        single["steps"],
        np.asarray(single["singular_values"][strongest]),
        amplitudes[strongest],
        f"one {setup.dim}x{setup.dim} linear layer, InfoNCE, noise blockdiag(0, kI) on {setup.block} "
        f"coordinates (Jing et al. 2022 Fig. 3)",
    )
    plots.save_png(fig, out / "collapse_strong_augmentation.png")
    steps = np.asarray(two["steps"])
    fig = plots.evolution_figure(
        [
            ("W1", "singular value (log scale)", steps, np.asarray(two["W1"])),
            ("W2", "singular value (log scale)", steps, np.asarray(two["W2"])),
            (
                "embedding covariance W2W1(W2W1)^T",
                "eigenvalue (log scale)",
                steps,
                np.asarray(two["embedding_covariance"]),
            ),
        ],
        f"two-layer linear model W2 W1, weak augmentation k = {two['amplitude']:g} (Jing et al. 2022 Fig. 6)",
    )
    plots.save_png(fig, out / "collapse_two_layer.png")
    result = {"strong_augmentation": single, "two_layer": two}
    atomic_write_json(out / "collapse.json", result)
    return result


# --- min-max distance ratio --------------------------------------------------------------------------


def minmax_vs_dimension(
    dims: Sequence[int] = tuple(2**i for i in range(13)), samples: int = 1000, seed: int = 0
) -> dict:
    """Eq. 9 (mean over queries) of `samples` i.i.d. points, Gaussian and uniform, per dimension."""
    gen = torch.Generator().manual_seed(seed)
    out = {"dims": list(dims), "samples": samples, "gaussian": [], "uniform": []}
    for d in dims:
        out["gaussian"].append(min_max_ratio(torch.randn(samples, d, generator=gen)))
        out["uniform"].append(min_max_ratio(torch.rand(samples, d, generator=gen)))
    return out


def minmax_sparse_vs_dense(
    input_dim: int = 1024,
    out_dim: int = 128,
    supports: Sequence[int] = tuple(2**i for i in range(11)),
    samples: int = 1000,
    seed: int = 0,
) -> dict:
    """Eq. 9 of z = W x for i.i.d. N(0, I) inputs x in R^input_dim: W (out_dim x input_dim) Gaussian
    with only `s` non-zero columns (a SparseHead-like support of s input features) versus a dense W."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, input_dim, generator=gen)
    w = torch.randn(out_dim, input_dim, generator=gen) / input_dim**0.5
    sparse = []
    for s in supports:
        cols = torch.randperm(input_dim, generator=gen)[:s]
        sparse.append(min_max_ratio(x[:, cols] @ w[:, cols].T))
    return {
        "input_dim": input_dim,
        "out_dim": out_dim,
        "samples": samples,
        "supports": list(supports),
        "sparse": sparse,
        "dense": min_max_ratio(x @ w.T),
    }


def run_minmax(out_dir: str | Path, samples: int = 1000, seed: int = 0) -> dict:
    """Both min-max experiments -> minmax.json and minmax.png."""
    out = Path(out_dir)
    iid = minmax_vs_dimension(samples=samples, seed=seed)
    proj = minmax_sparse_vs_dense(samples=samples, seed=seed)
    fig = plots.lines_figure(
        [
            (
                "i.i.d. data (Lemma 5.7)",
                "dimension d",
                "mean min-max ratio (Eq. 9)",
                [("Gaussian N(0, I)", iid["dims"], iid["gaussian"]), ("uniform [0, 1]^d", iid["dims"], iid["uniform"])],
            ),
            (
                f"z = W x, W {proj['out_dim']}x{proj['input_dim']}",
                "non-zero columns of W (support size)",
                "mean min-max ratio (Eq. 9)",
                [
                    ("column-sparse W", proj["supports"], proj["sparse"]),
                    ("dense W (all columns)", [proj["supports"][0], proj["supports"][-1]], [proj["dense"]] * 2),
                ],
            ),
        ],
        f"min-max distance ratio, {samples} samples (Song et al. 2023 Eq. 9)",
    )
    plots.save_png(fig, out / "minmax.png")
    result = {"iid": iid, "projection": proj}
    atomic_write_json(out / "minmax.json", result)
    return result


@dataclass
class SimulateOptions:
    """The options of `sparsehead simulate`."""

    out: str = opt("simulations", "output folder")
    steps: int = opt(1000, "collapse: SGD steps of the one-layer runs (two-layer: twice as many)", min=1)
    samples: int = opt(1000, "minmax: points per data set", min=1)
    seed: int = opt(0, "random seed")


def run(experiment: str, out: Path, opts: SimulateOptions) -> list[str]:
    """Run `experiment` ("collapse" or "minmax") into `out`; the lines that summarise it."""
    if experiment == "collapse":
        result = run_collapse(out, ToySetup(steps=opts.steps, seed=opts.seed), two_layer_steps=2 * opts.steps)
        single, two = result["strong_augmentation"], result["two_layer"]
        lines = [
            f"one layer, k={k:g}: smallest/largest singular value of W = {ratio:.3g}"
            for k, ratio in zip(single["amplitudes"], single["final_min_over_max"])
        ]
        return lines + [
            f"two layers, k={two['amplitude']:g}: smallest/largest singular value of W2 W1 = "
            f"{two['final_min_over_max']:.3g} (one layer, same setting: "
            f"{two['single_layer_same_setup_min_over_max']:.3g})"
        ]
    iid = run_minmax(out, samples=opts.samples, seed=opts.seed)["iid"]
    return [
        "i.i.d. Gaussian, mean min-max ratio by dimension: "
        + ", ".join(f"d={d}: {m:.3g}" for d, m in zip(iid["dims"], iid["gaussian"]))
    ]
