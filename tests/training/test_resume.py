"""Exact resume: runs killed with SIGKILL and resumed end bitwise equal to an unbroken run; a run
folder is resumed only with its own config; damaged checkpoints are set aside."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, TINY, assert_same_training_state, run_cli
from sparsehead import cli, config
from sparsehead.runs import checkpoint
from sparsehead.runs.metrics_log import read_metrics
from sparsehead.training import resume
from sparsehead.training.loop import pretrain

# BYOL (EMA target + predictor: the most state), 4 steps per epoch over 3 epochs, so kills and
# resumes cross epoch boundaries; a checkpoint every 2 steps, so odd kill points redo a step.
RUN = TINY + [
    "data.subset=256",
    "train.epochs=3",
    "train.threads=1",
    "train.checkpoint_every=2",
    "train.keep_checkpoints=2",
    "method.name=byol",
    "method.predictor_hidden_dim=32",
]
TOTAL_STEPS = 12
# The same run with SparseHead's prune mode: the head's last layer pruned from step 1 to step 10
# (of 12) to a quarter of its 64 columns, so the kills below fall inside the pruning schedule.
PRUNE = ["sparsity.mode=prune", "sparsity.target_support=0.25", "sparsity.prune_start=0.1", "sparsity.prune_end=0.8"]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """pretrain applies train.threads=1 to this process; give the other tests their threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _unbroken_run(tmp_path_factory, extra: list[str]) -> Path:
    """A fresh process, as the killed runs are: imports that draw from Python's `random` (rich, via
    scikit-learn, draws once at import) then happen in the same places in both, wherever this test
    falls in the suite; in this process they would depend on which tests imported them first."""
    out = tmp_path_factory.mktemp("reference")
    args = ["pretrain", *RUN, *extra, f"train.out_dir={out}", "--run-dir", str(out / "run")]
    proc = run_cli(*args, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out / "run"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An unbroken run, in its own process."""
    return _unbroken_run(tmp_path_factory, [])


@pytest.fixture(scope="module")
def reference_prune_run(tmp_path_factory):
    """An unbroken run with sparsity.mode=prune, in its own process."""
    return _unbroken_run(tmp_path_factory, PRUNE)


def final_state(run_dir: Path) -> dict:
    return checkpoint.load(checkpoint.find(run_dir))


@pytest.mark.numerics
@pytest.mark.parametrize("mode", ["penalty", "prune"])
def test_sigkilled_run_resumes_bitwise_equal_to_an_unbroken_one(mode, request, tmp_path):
    reference_run = request.getfixturevalue("reference_prune_run" if mode == "prune" else "reference_run")
    extra = PRUNE if mode == "prune" else []
    seed = int(os.environ.get("SPARSEHEAD_KILL_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    # Three kills in one run: after a step, halfway through writing a checkpoint, after a step.
    k1 = rng.randint(1, 5)
    k2 = rng.choice([s for s in (6, 8) if s > k1])
    k3 = rng.randint(k2, 11)
    kills = [f"step:{k1}", f"checkpoint:{k2}", f"step:{k3}"]
    run_dir = tmp_path / "run"
    args = ["pretrain", *RUN, *extra, f"train.out_dir={tmp_path}", "--run-dir", str(run_dir)]
    resume_args = ["pretrain", "--resume", str(run_dir)]
    context = f"kill points {kills} (SPARSEHEAD_KILL_SEED={seed})"
    for kill, cmd in zip(kills, [args, resume_args, args]):
        # A kill before the first checkpoint (step 1) leaves nothing to resume: the next attempt starts over.
        had_checkpoint = bool(checkpoint.list_checkpoints(run_dir))
        proc = run_cli(*cmd, env={"SPARSEHEAD_TEST_SIGKILL": kill, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == -signal.SIGKILL, (context, kill, proc.stderr[-2000:])
        assert ("resuming" in proc.stderr) == had_checkpoint, context
        if kill.startswith("checkpoint"):  # killed mid-write: a temporary file, no ckpt-k2.pt
            folder = checkpoint.checkpoint_dir(run_dir)
            assert list(folder.glob(f".ckpt-{k2:08d}.pt.*.tmp")), context
            assert not (folder / f"ckpt-{k2:08d}.pt").exists(), context
    proc = run_cli(*resume_args, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_training_state(final_state(run_dir), final_state(reference_run), TOTAL_STEPS, context)
    print(f"bitwise equal after {context}")
    # metrics.jsonl reads as one unbroken run: no duplicated steps, the same losses
    ours, theirs = read_metrics(run_dir), read_metrics(reference_run)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs], context
    assert [r.get("loss") for r in ours] == [r.get("loss") for r in theirs], context
    assert not list(checkpoint.checkpoint_dir(run_dir).glob(".*.tmp")), "partial writes are cleaned up"
    assert len(checkpoint.list_checkpoints(run_dir)) == 2  # train.keep_checkpoints
    if mode == "prune":  # the mask was restored, not rebuilt: 16 of 64 columns, the rest exact zeros
        state = final_state(run_dir)
        norms = state["model"]["projector.3.weight"].norm(dim=0)
        assert int(state["sparsity"]["masks"][0].sum()) == 16 and torch.equal(state["sparsity"]["masks"][0], norms > 0)


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_changed_config_is_refused_with_the_differing_keys(reference_run, tmp_path, capsys):
    run_dir = copy_run(reference_run, tmp_path / "run")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in checkpoint.checkpoint_dir(run_dir).iterdir())
    cfg = config.load(
        None, RUN + [f"train.out_dir={tmp_path}", "optim.lr=0.01", "head.out_dim=16", "train.progress=true"]
    )
    with pytest.raises(checkpoint.CheckpointError) as err:
        pretrain(cfg, run_dir)
    msg = str(err.value)
    assert "optim.lr: 0.003 in the run, 0.01 now" in msg and "head.out_dim: 32 in the run, 16 now" in msg
    assert "train.progress" not in msg  # a key that may differ on resume
    assert "--force" in msg
    after = sorted((p.name, p.stat().st_mtime_ns) for p in checkpoint.checkpoint_dir(run_dir).iterdir())
    assert before == after  # nothing was touched
    # --resume with an override of a key that may not change: refused by the CLI, exit code 2
    assert cli.main(["pretrain", "--resume", str(run_dir), "sparsity.lam=0.1"]) == 2
    assert "sparsity.lam: 0.0 in the run, 0.1 now" in capsys.readouterr().err
    # ... and with --force it goes ahead, warning with the keys (the run is finished: only k-NN reruns)
    with pytest.warns(UserWarning, match="sparsity.lam"):
        assert cli.main(["pretrain", "--resume", str(run_dir), "--force", "sparsity.lam=0.1"]) == 0
    assert config.load(run_dir / "config.yaml").sparsity.lam == 0.1


def test_keys_allowed_to_differ_exist_and_are_documented():
    doc = (REPO / "docs" / "reliability.md").read_text()
    flat = {f"{s}.{k}" for s, sec in config.to_dict(config.Config()).items() for k in sec}
    for key in resume.RESUME_MAY_DIFFER:
        assert key in flat, key
        assert f"`{key}`" in doc, f"{key} is not documented in docs/reliability.md"


def test_damaged_newest_checkpoint_falls_back_to_the_previous_good_one(reference_run, tmp_path):
    run_dir = copy_run(reference_run, tmp_path / "run")
    older, newest = checkpoint.list_checkpoints(run_dir)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated by a crash
    leftover = newest.parent / ".ckpt-00000014.pt.abc.tmp"
    leftover.write_bytes(b"half a checkpoint")
    cfg = config.load(None, RUN + [f"train.out_dir={tmp_path}"])
    with pytest.warns(UserWarning, match="skipping damaged checkpoint.*truncated or corrupt"):
        path, state = resume.resume_point(run_dir, cfg)
    assert path == older and state["step"] == 10
    assert checkpoint.list_checkpoints(run_dir) == [older]  # the damaged one is set aside, not pruned into
    assert (newest.parent / (newest.name + ".damaged")).is_file()
    assert not leftover.exists()


def test_changed_data_set_is_refused_unless_forced():
    state = {"data_position": resume.data_position(10, 4, 256)}
    resume.check_data_position(state, 256, 4, force=False)  # same data: fine
    with pytest.raises(checkpoint.CheckpointError, match="256 images .* then, 300"):
        resume.check_data_position(state, 300, 4, force=False)
    with pytest.warns(UserWarning, match="continuing"):
        resume.check_data_position(state, 300, 4, force=True)


def test_every_random_state_survives_a_checkpoint_file(tmp_path):
    gen = torch.Generator().manual_seed(3)
    saved = resume.capture_rng(gen)

    def draw():
        return (
            torch.rand(3).tolist(),
            np.random.rand(3).tolist(),
            random.random(),
            np.random.randn(),
            torch.rand(3, generator=gen).tolist(),
        )

    expected = draw()
    checkpoint.save(tmp_path, {"model": {}, "rng": resume.gather_rng(saved)}, step=1)
    draw(), draw()  # move every stream on
    resume.restore_rng(checkpoint.load(checkpoint.find(tmp_path))["rng"], gen)
    assert draw() == expected


def test_resume_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["pretrain", "--resume", str(tmp_path)]) == 2
    assert re.search(r"is not a run folder \(it has no config.yaml\)", capsys.readouterr().err)
