"""A training step that does not log reads nothing back from the device (issue 36): in every sparsity
mode and under either non-finite policy (the online classifier and the collapse monitor on), train_step
calls none of the tensor methods that copy a value to the host (item, bool, int, float, tolist, numpy,
cpu). On the CPU these are no syncs, so the test makes them raise while train_step runs;
tests/cuda/test_cuda.py checks the same on a GPU under torch.cuda.set_sync_debug_mode. The verdict is
still read where the run logs or saves."""

from __future__ import annotations

import contextlib
import traceback

import pytest
import torch

from conftest import TINY
from sparsehead import config
from sparsehead.training.setup import setup
from sparsehead.training.step import train_step

READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")


class HostRead(AssertionError):
    """A tensor's value was read back to the host inside a training step."""


@contextlib.contextmanager
def no_host_reads():
    """Every host read of a tensor value raises HostRead, naming the call site."""
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def trap(name):
        def read(self, *args, **kwargs):
            raise HostRead(f"Tensor.{name} in a non-logging step:\n{''.join(traceback.format_stack(limit=6))}")

        return read

    try:
        for name in READS:
            setattr(torch.Tensor, name, trap(name))
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


SPARSITY = {
    "none": [],
    "penalty": ["sparsity.lam=0.3"],
    "adaptive": ["sparsity.lam=0.05", "sparsity.target_support=0.25", "sparsity.adapt_gain=0.5"],
    "proximal": ["sparsity.mode=proximal", "sparsity.lam=0.5", "sparsity.target_support=0.25"],
    "prune": [
        "sparsity.mode=prune",
        "sparsity.target_support=0.25",
        "sparsity.prune_start=0",
        "sparsity.prune_end=0.5",
    ],
}


def poison(model, factor=float("nan")):
    """`model` with its loss times `factor`, a NaN loss by default (after a finite forward pass, whose
    BatchNorm statistics count)."""

    def forward(*crops):
        out = model(*crops)
        return out._replace(loss=out.loss * factor)

    return forward


def steps_without_reads(cfg, run_dir, poisoned=(), after=lambda run: None, factor=float("nan")) -> dict:
    """Four steps of the run `cfg` describes (the loss times `factor`, NaN, at the `poisoned` ones);
    steps 2-4 (step 1 creates the optimiser's state) under no_host_reads, `after(run)` after each.
    Returns the logs the run would write then (they read)."""
    with setup(cfg, run_dir) as run:
        model = run.model
        for images, labels in run.batches():
            run.model = poison(model, factor) if run.state.step + 1 in poisoned else model
            with no_host_reads() if run.state.step else contextlib.nullcontext():
                train_step(run, images, labels)
            after(run)
        return {k: v for hook in run.hooks for k, v in hook.logs().items()}


@pytest.mark.parametrize("policy", ["stop", "skip"])
@pytest.mark.parametrize("sparsity", SPARSITY)
def test_a_step_that_does_not_log_reads_nothing_back(tmp_path, sparsity, policy):
    cfg = config.load(
        None,
        [*TINY, *SPARSITY[sparsity], f"train.nonfinite={policy}", "train.max_steps=4", "train.threads=1"]
        + ["data.subset=256", f"train.out_dir={tmp_path}", "train.collapse_threshold=0.1", "eval.online_linear=true"],
    )
    logs = steps_without_reads(cfg, tmp_path / "run")
    assert 0 <= logs["online_linear_acc"] <= 1  # the online classifier and the collapse window took part
    assert logs["r/effective_rank"] > 0
    if sparsity != "none":
        assert logs["head/support"] > 0
    if sparsity == "prune":  # 4 of 4 steps taken: the schedule's end, round(0.25 x 32) columns kept
        assert logs["prune_keep_frac"] == 0.25


def states_around_a_poisoned_step(cfg, run_dir) -> tuple[dict, dict]:
    """Four steps of `cfg` (train.nonfinite=skip) with a NaN loss at step 3, read-free from step 2: the
    training state after each step (model, optimiser, sparsity) and the logs, the skip warned of."""
    states = {}

    def keep(run):
        state = run.state.state_dict()
        states[run.state.step] = {
            "model": {k: v.clone() for k, v in state["model"].items()},
            "optimizer": [b.clone() for s in run.optimizer.state.values() for b in s.values()],
            "sparsity": state["sparsity"],
        }

    with pytest.warns(UserWarning, match="skipping step 3: non-finite loss"):
        logs = steps_without_reads(cfg, run_dir, poisoned={3}, after=keep)
    assert logs["nonfinite_skipped"] == 1
    return states, logs


def assert_the_step_changed_nothing(before: dict, after: dict) -> None:
    assert before["sparsity"] == after["sparsity"]
    assert all(torch.equal(a, b) for a, b in zip(before["optimizer"], after["optimizer"]))
    assert before["model"].keys() == after["model"].keys()
    for key in before["model"]:
        assert torch.equal(before["model"][key], after["model"][key]), key


def test_byol_with_lars_skips_a_poisoned_step_without_reading_it(tmp_path):
    """The skip, LARS, the EMA and the adaptive lambda on the device: the poisoned step 3 changes
    nothing (weights, BatchNorm statistics, targets, momenta, lambda and its step count), and the
    skip is counted when the run reads its verdict."""
    cfg = config.load(
        None,
        [*TINY, "method.name=byol", "optim.name=lars", "train.nonfinite=skip", "train.max_steps=4"]
        + ["sparsity.lam=0.05", "sparsity.target_support=0.25", "data.subset=256", "train.threads=1"]
        + [f"train.out_dir={tmp_path}"],
    )
    states, _ = states_around_a_poisoned_step(cfg, tmp_path / "run")
    assert states[2]["sparsity"]["steps"] == 2
    assert_the_step_changed_nothing(states[2], states[3])
    assert not torch.equal(states[3]["model"]["backbone.conv1.weight"], states[4]["model"]["backbone.conv1.weight"])


METHODS_WITH_AFTER_STEP_WORK = {  # what each moves after an update besides the EMA, and where it lives
    "directpred": (["method.name=directpred"], ["corr", "predictor.weight"]),
    "directcopy": (["method.name=directcopy"], ["corr", "predictor.weight"]),
    # A queue of 2 batches, filling from step 1: full from step 3's forward on (both codes are tried).
    "swav": (
        ["method.name=swav", "method.swav_queue_length=128", "method.swav_epoch_queue_starts=0"],
        ["prototypes.weight", "queue"],
    ),
}


@pytest.mark.parametrize("name", METHODS_WITH_AFTER_STEP_WORK)
def test_a_method_after_step_work_skips_a_poisoned_step_without_reading_it(tmp_path, name):
    """DirectPred's F, its count and predictor, DirectCopy's, SwAV's prototypes and queue: gated on the
    device, the poisoned step 3 leaves them (and everything else) as step 2 left them; step 4 moves them."""
    overrides, moved = METHODS_WITH_AFTER_STEP_WORK[name]
    cfg = config.load(
        None,
        [*TINY, *overrides, "train.nonfinite=skip", "train.max_steps=4", "data.subset=256", "train.threads=1"]
        + [f"train.out_dir={tmp_path}"],
    )
    states, _ = states_around_a_poisoned_step(cfg, tmp_path / "run")
    assert_the_step_changed_nothing(states[2], states[3])
    model = {step: state["model"] for step, state in states.items()}
    for key in moved:
        assert not torch.equal(model[3][key], model[4][key]), key
    if name == "swav":  # the queue filled at steps 1 and 2, then took step 4's batch
        assert model[2]["queue"][:, -1].any() and torch.equal(model[4]["queue"][:, 64:], model[2]["queue"][:, :64])
    else:
        assert [model[step]["corr_updates"].item() for step in (1, 2, 3, 4)] == [1, 2, 2, 3]


def test_an_fp16_step_reads_nothing_back_and_skips_what_the_grad_scaler_skips(tmp_path, monkeypatch):
    """fp16's GradScaler (here a CPU one, torch has it; train.precision=fp16 itself needs CUDA) in the
    one step: its verdict on the gradients joins the hooks' on the device. Step 3's scaled loss
    overflows (x 1e36, finite unscaled): no update, no EMA, F or predictor move, the scale halves, and
    the non-finite guard counts no skip (an overflow is the scaler's routine)."""
    from sparsehead.training import setup as setup_module

    monkeypatch.setattr(setup_module, "grad_scaler", lambda precision, device: torch.amp.GradScaler("cpu"))
    cfg = config.load(
        None,
        [*TINY, "method.name=directpred", "train.nonfinite=skip", "train.max_steps=4", "data.subset=256"]
        + ["train.threads=1", f"train.out_dir={tmp_path}"],
    )
    weights, scales = {}, {}

    def keep(run):
        kept = dict(run.method.named_parameters()) | {k: getattr(run.method, k) for k in ("corr", "corr_updates")}
        weights[run.state.step] = {k: v.detach().clone() for k, v in kept.items()}
        weights[run.state.step]["optimizer"] = [b.clone() for s in run.optimizer.state.values() for b in s.values()]
        scales[run.state.step] = run.scaler.get_scale()

    logs = steps_without_reads(cfg, tmp_path / "run", poisoned={3}, after=keep, factor=1e36)
    assert logs["nonfinite_skipped"] == 0
    assert scales == {1: 2.0**16, 2: 2.0**16, 3: 2.0**15, 4: 2.0**15}
    for key, value in weights[2].items():
        pairs = zip(value, weights[3][key]) if key == "optimizer" else [(value, weights[3][key])]
        assert all(torch.equal(a, b) for a, b in pairs), key
    for key in ("backbone.conv1.weight", "predictor.weight", "corr"):
        assert not torch.equal(weights[3][key], weights[4][key]), key
    key = "target_backbone.conv1.weight"  # the EMA's momentum reaches 1 at the last step, 4
    assert not torch.equal(weights[1][key], weights[2][key])
