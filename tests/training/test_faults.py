"""A NaN/Inf loss or gradient: the run stops naming the step with the last checkpoint intact, or
(train.nonfinite=skip) the step changes nothing, is counted, and too many in a row stop the run."""

from __future__ import annotations

import warnings

import pytest
import torch

from conftest import TINY
from sparsehead import cli
from sparsehead.methods.simclr import SimCLR
from sparsehead.runs import checkpoint
from sparsehead.runs.metrics_log import read_metrics
from sparsehead.training.faults import NonFiniteError, NonFiniteGuard, gated_update, scaler_verdict
from sparsehead.training.loop import pretrain

FAST = ["data.subset=256", "train.epochs=2", "train.checkpoint_every=1", "train.keep_checkpoints=10"]


def poison(monkeypatch, steps, how="input"):
    """Make SimCLR's forward go non-finite on the given steps (its n-th call is step n).

    input: a NaN image batch (poisons the loss and the BatchNorm running statistics);
    gradient: the loss stays finite, the gradient of one weight is NaN (0 * d sqrt(u)/du at u = 0).
    """
    real, calls = SimCLR.forward, []

    def forward(self, x1, x2):
        calls.append(1)
        if len(calls) not in steps:
            return real(self, x1, x2)
        if how == "input":
            return real(self, x1 * float("nan"), x2)
        out = real(self, x1, x2)
        weight = next(self.projector.parameters())
        return out._replace(loss=out.loss + (weight.sum() * 0).sqrt())

    monkeypatch.setattr(SimCLR, "forward", forward)


def test_nan_loss_stops_the_run_naming_the_step(tmp_path, monkeypatch, capsys):
    poison(monkeypatch, {3})
    run_dir = tmp_path / "run"
    code = cli.main(["pretrain", *TINY, *FAST, f"train.out_dir={tmp_path}", "--run-dir", str(run_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert "error: non-finite loss (nan) at step 3" in err and "train.nonfinite=skip" in err
    kept = checkpoint.list_checkpoints(run_dir)
    assert [p.name for p in kept] == ["ckpt-00000001.pt", "ckpt-00000002.pt"]  # the last good state
    assert all(t.isfinite().all() for t in checkpoint.load(kept[-1])["model"].values() if t.is_floating_point())


def test_nan_gradient_with_a_finite_loss_stops_the_run(tiny_cfg, tmp_path, monkeypatch):
    poison(monkeypatch, {2}, how="gradient")
    with pytest.raises(NonFiniteError, match="non-finite gradient .*at step 2"):
        pretrain(tiny_cfg(*FAST), tmp_path / "run")
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "run")] == ["ckpt-00000001.pt"]


def test_skip_mode_leaves_the_model_untouched_and_counts(tiny_cfg, tmp_path, monkeypatch):
    poison(monkeypatch, {3})
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipping step 3: non-finite loss"):
        summary = pretrain(tiny_cfg(*FAST, "train.nonfinite=skip", "train.max_steps=5"), run_dir)
    assert summary["steps"] == 5
    states = {int(p.name[5:13]): checkpoint.load(p) for p in checkpoint.list_checkpoints(run_dir)}
    for part in ("model", "optimizer"):  # step 3 changed nothing: weights, BN statistics, Adam moments
        before, after = states[2][part], states[3][part]

        def flat(s):
            return (
                s
                if part == "model"
                else {k: v for i, st in s["state"].items() for k, v in ((f"{i}.{n}", t) for n, t in st.items())}
            )

        assert all(torch.equal(flat(before)[k], flat(after)[k]) for k in flat(before)), part
    assert not torch.equal(states[3]["model"]["projector.0.weight"], states[4]["model"]["projector.0.weight"])
    assert all(t.isfinite().all() for t in states[5]["model"].values() if t.is_floating_point())
    assert [r["nonfinite_skipped"] for r in read_metrics(run_dir) if "loss" in r] == [0, 0, 1, 1, 1]
    assert states[5]["nonfinite"] == {"skipped": 1, "consecutive": 0}


def test_too_many_consecutive_skips_stop_the_run(tiny_cfg, tmp_path, monkeypatch):
    poison(monkeypatch, set(range(2, 100)))
    with pytest.warns(UserWarning, match="skipping step"):
        with pytest.raises(NonFiniteError, match="3 consecutive steps up to step 4 .*diverging"):
            pretrain(tiny_cfg(*FAST, "train.nonfinite=skip", "train.nonfinite_max_skips=3"), tmp_path / "run")
    assert checkpoint.load(checkpoint.find(tmp_path / "run"))["step"] == 3  # skipped steps still checkpoint


def test_non_finite_weights_are_never_checkpointed(tiny_cfg):
    model = torch.nn.Linear(2, 2)
    guard = NonFiniteGuard(tiny_cfg().train, model, "some/run")
    guard.before_checkpoint(7)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="parameters became non-finite by step 7 .*weight"):
        guard.before_checkpoint(7)


def _guard_verdicts(rank: int) -> dict:
    """Rank 1 alone sees a NaN loss at step 2: both ranks must skip that update."""
    from sparsehead import config

    model = torch.nn.Linear(2, 2)
    guard = NonFiniteGuard(config.load(None, TINY + ["train.nonfinite=skip"]).train, model, "run")
    verdicts = []
    for step, bad in ((1, False), (2, rank == 1), (3, False)):
        loss = model(torch.ones(1, 2)).sum() * (float("nan") if bad else 1.0)
        loss.backward()
        with warnings.catch_warnings(record=True):  # "skipping step 2" (tested elsewhere)
            verdicts.append(guard.allows_update(step, loss, check_grads=False))
    return {"verdicts": torch.tensor(verdicts), "skipped": torch.tensor(guard.skipped)}


def test_under_ddp_every_rank_takes_the_same_non_finite_verdict():
    from ddp_harness import run_on_ranks

    for result in run_on_ranks(_guard_verdicts):
        assert result["verdicts"].tolist() == [True, False, True] and int(result["skipped"]) == 1


def test_the_grad_scaler_verdict_is_a_device_bool_that_skips_an_overflow():
    """fp16's GradScaler driven as the step drives it (here on the CPU, where torch has one too): unscale_
    gives the unscaled loss's gradients and the verdict True; a scaled loss that overflows float32 gives
    False, the fused update then leaves weights and moments, and update() halves the scale."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), fused=True)
    scaler = torch.amp.GradScaler("cpu")
    x = torch.randn(8, 4)
    expected = torch.autograd.grad(model(x).square().mean(), list(model.parameters()))

    def weights_and_moments():
        return [*model.parameters(), *(t for state in optimizer.state.values() for t in state.values())]

    for factor, finite, scale in ((1.0, True, 2.0**16), (1e36, False, 2.0**15)):  # 1e36 x 2^16 > float32 max
        optimizer.zero_grad()
        scaler.scale(model(x).square().mean() * factor).backward()
        verdict = scaler_verdict(scaler, optimizer)
        assert isinstance(verdict, torch.Tensor) and bool(verdict) is finite
        if finite:  # scaled and unscaled by a power of 2: exactly the unscaled gradients
            assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), expected))
        before = [t.clone() for t in weights_and_moments()]
        gated_update(optimizer, verdict)
        scaler.update()
        assert all(torch.equal(a, b) for a, b in zip(before, weights_and_moments())) is not finite
        assert scaler.get_scale() == scale
    assert scaler_verdict(torch.amp.GradScaler("cpu", enabled=False), optimizer) is True
