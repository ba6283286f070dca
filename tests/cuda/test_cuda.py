"""Every path on CUDA: views, mixed precision, channels_last, SyncBatchNorm, exact resume, evaluation
on the GPU against the CPU, and no host-device sync in a training step that does not log.

Skipped without a GPU (tests/cuda/conftest.py); scripts/gpu_check.sh runs them on one."""

from __future__ import annotations

import os
import traceback
import warnings
from collections import Counter

import pytest
import torch

from conftest import TINY, run_cli
from sparsehead import config
from sparsehead.core.precision import autocast, grad_scaler
from sparsehead.data.crops import sample_crops
from sparsehead.data.views import ViewGenerator
from sparsehead.runs import checkpoint
from sparsehead.runs.model import build_model
from sparsehead.training.loop import pretrain

pytestmark = pytest.mark.cuda
CUDA = "cuda"  # a string, not torch.device("cuda"): nothing touches CUDA at import


def _views(size=16):
    cfg = config.load(None, TINY + [f"data.image_size={size}"])
    return ViewGenerator(cfg.augment, size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _images(n=512, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_crop_boxes_on_cuda_follow_the_cpu_distribution():
    n = 40_000
    boxes = {
        dev: sample_crops(n, 32, 48, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator(dev).manual_seed(1), dev).cpu()
        for dev in ("cpu", CUDA)
    }
    area = {d: b[:, 2] * b[:, 3] / (32 * 48) for d, b in boxes.items()}
    aspect = {d: (b[:, 3] / b[:, 2]).log() for d, b in boxes.items()}
    # Means of n draws of a variable in [0, 1] (sd <= 0.5): 5 standard errors of the difference ~ 0.018.
    for stat in (
        area,
        aspect,
        {d: b[:, 0] / 32 for d, b in boxes.items()},
        {d: b[:, 1] / 48 for d, b in boxes.items()},
    ):
        assert abs(stat["cpu"].mean() - stat[CUDA].mean()) < 0.018
        assert abs(stat["cpu"].std() - stat[CUDA].std()) < 0.018


def test_views_on_cuda_have_the_cpu_moments_and_are_reproducible_from_the_generator():
    views, images = _views(), _images()
    cpu = torch.cat(views(images, torch.Generator().manual_seed(0)))

    def run():
        return torch.cat(views(images.to(CUDA), torch.Generator(CUDA).manual_seed(0)))

    gpu, again = run(), run()
    assert torch.equal(gpu, again)  # bitwise from the same generator state on the same device
    assert gpu.isfinite().all()
    gpu = gpu.cpu()
    # Per-channel moments over 1024 views of 16x16: equal within sampling noise (different draws).
    for reduce in (lambda x: x.mean(dim=(0, 2, 3)), lambda x: x.std(dim=(0, 2, 3))):
        torch.testing.assert_close(reduce(gpu), reduce(cpu), rtol=0, atol=0.05)


def test_views_on_cuda_equal_the_cpu_views_for_the_same_draws():
    """No randomness apart: with crop/flip/jitter off, CPU and CUDA give the same pixels (float rounding)."""
    cfg = config.load(None, TINY + ["augment.recipe=none"])
    views, images = ViewGenerator(cfg.augment, 16, (0.5,) * 3, (0.25,) * 3), _images(64, 16)
    cpu = views(images, torch.Generator().manual_seed(0))[0]
    gpu = views(images.to(CUDA), torch.Generator(CUDA).manual_seed(0))[0].cpu()
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-4)


def _train_steps(precision, steps=6, channels_last=False, seed=0):
    cfg = config.load(None, TINY + ["optim.name=adam", "optim.lr=1e-3"])
    torch.manual_seed(seed)
    method = build_model(cfg).to(CUDA)
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    views, images = _views(), _images(64, 16).to(CUDA)
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    scaler = grad_scaler(precision, torch.device(CUDA))
    gen = torch.Generator(CUDA).manual_seed(0)
    x1, x2 = views(images, gen)  # the same views every step: the loss must fall on them
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x1, x2 = x1.contiguous(memory_format=fmt), x2.contiguous(memory_format=fmt)
    losses = []
    for _ in range(steps):
        with autocast(precision, torch.device(CUDA)):
            loss = method(x1, x2).loss
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    return losses, method


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_a_mixed_precision_step_is_finite_and_the_loss_falls(precision):
    losses, _ = _train_steps(precision)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses


def test_channels_last_gives_the_contiguous_result_within_rounding():
    a, _ = _train_steps("fp32", steps=2)
    b, _ = _train_steps("fp32", steps=2, channels_last=True)
    # cuDNN picks other (TF32) kernels per layout: equal within their rounding, not bitwise.
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-2, atol=1e-2)


def test_sync_batchnorm_in_a_one_process_nccl_group_matches_plain_batchnorm(tmp_path):
    import torch.distributed as dist

    from sparsehead.core.sync_batchnorm import convert_sync_batchnorm

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    backend = "nccl" if dist.is_nccl_available() else "gloo"
    dist.init_process_group(
        backend, rank=0, world_size=1, device_id=torch.device(CUDA, 0) if backend == "nccl" else None
    )
    try:
        bn = torch.nn.BatchNorm2d(8).to(CUDA)
        sync = convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(8)).to(CUDA), torch.device(CUDA))
        assert isinstance(sync[0], torch.nn.SyncBatchNorm)
        x = torch.randn(16, 8, 5, 5, device=CUDA, requires_grad=True)
        y_ref, y = bn(x), sync(x)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
        (g,) = torch.autograd.grad(y.square().sum(), x)
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sync[0].running_var, bn.running_var)
    finally:
        dist.destroy_process_group()


RUN = TINY + [
    "train.device=cuda",
    "train.checkpoint_every=3",
    "train.keep_checkpoints=10",
    "optim.name=adam",
    "eval.knn_k=5",
]


def test_a_run_checkpointed_on_the_gpu_resumes_bitwise_and_loads_on_the_cpu(tmp_path, monkeypatch):
    # Bitwise needs run-to-run deterministic kernels (cuDNN's default backward may use atomics).
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    cfg = config.load(None, RUN + [f"train.out_dir={tmp_path}"])
    pretrain(cfg, tmp_path / "unbroken")
    pretrain(config.load(None, RUN + [f"train.out_dir={tmp_path}", "train.max_steps=3"]), tmp_path / "resumed")
    pretrain(cfg, tmp_path / "resumed")
    a, b = (checkpoint.load(checkpoint.find(tmp_path / r)) for r in ("unbroken", "resumed"))
    assert a["step"] == b["step"] > 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key  # bitwise on the same GPU
    # The GPU run's folder works on the CPU: evaluate, analyze, export (checkpoints hold CPU tensors).
    env = {"CUDA_VISIBLE_DEVICES": ""}
    for args in (
        ["evaluate", str(tmp_path / "resumed"), "--protocol", "knn"],
        ["analyze", str(tmp_path / "resumed")],
        ["export", str(tmp_path / "resumed"), "--out", str(tmp_path / "backbone.safetensors")],
    ):
        done = run_cli(*args, env=env, timeout=300)
        assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
    assert (tmp_path / "backbone.safetensors").is_file()


def test_knn_and_linear_probe_on_cuda_equal_the_cpu_results():
    from sparsehead.evaluate.knn import knn_classify
    from sparsehead.evaluate.linear import linear_probe

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 32, generator=g) * 2
    y = torch.randint(0, 5, (600,), generator=g)
    x = centres[y] + torch.randn(600, 32, generator=g)
    tr, te = slice(0, 400), slice(400, 600)
    cpu = knn_classify(x[tr], y[tr], x[te], k=5)
    gpu = knn_classify(x[tr].to(CUDA), y[tr].to(CUDA), x[te].to(CUDA), k=5).cpu()
    assert (cpu == gpu).float().mean() >= 0.99  # ties may break differently at float rounding
    kw = dict(weight_decays=[1e-3], seed=0)
    lin_cpu = linear_probe(x[tr], y[tr], x[te], y[te], device="cpu", **kw)
    lin_gpu = linear_probe(x[tr], y[tr], x[te], y[te], device=CUDA, **kw)
    assert abs(lin_cpu["top1"] - lin_gpu["top1"]) <= 0.01, (lin_cpu, lin_gpu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_knn_bank_on_the_gpu_in_chunks_agrees_with_the_cpu(monkeypatch, dtype):
    from sparsehead.evaluate import knn
    from sparsehead.evaluate.knn import Vote, feature_bank, knn_predict

    g = torch.Generator().manual_seed(1)
    centres = torch.randn(10, 64, generator=g)
    y = torch.randint(0, 10, (3000,), generator=g)
    x = centres[y] + torch.randn(3000, 64, generator=g)
    votes = [Vote(5), Vote(200, 0.07)]
    cpu = knn_predict(feature_bank(x[:2500], torch.device("cpu")), y[:2500], x[2500:], votes)
    monkeypatch.setattr(knn, "BANK_CHUNK", 700)  # several chunks, the last one short
    bank = feature_bank(x[:2500], torch.device(CUDA), dtype)
    assert bank.dtype == dtype and bank.is_cuda
    gpu = knn_predict(bank, y[:2500], x[2500:], votes, batch_size=128)
    assert (gpu == cpu).float().mean() >= (0.99 if dtype == torch.float32 else 0.97)  # near ties may swap


SYNC_FREE_RUNS = {  # every sparsity mode under either non-finite policy; BYOL + LARS: the EMA and LARS
    "none-stop": [],
    "penalty-skip": ["sparsity.lam=0.3", "train.nonfinite=skip"],
    "adaptive-stop": ["sparsity.lam=0.05", "sparsity.target_support=0.25"],
    "adaptive-skip": ["sparsity.lam=0.05", "sparsity.target_support=0.25", "train.nonfinite=skip"],
    "proximal-skip": [
        "sparsity.mode=proximal",
        "sparsity.lam=0.5",
        "sparsity.target_support=0.25",
        "train.nonfinite=skip",
    ],
    "prune-stop": ["sparsity.mode=prune", "sparsity.target_support=0.25", "sparsity.prune_start=0"],
    "prune-skip": [
        "sparsity.mode=prune",
        "sparsity.target_support=0.25",
        "sparsity.prune_start=0",
        "train.nonfinite=skip",
    ],
    "byol-lars-skip": ["method.name=byol", "optim.name=lars", "train.nonfinite=skip"],
    "adamw-compiled": ["optim.name=adamw", "train.compile=true"],
    # fp16: the GradScaler's verdict joins the guard's on the device (fused Adam takes found_inf).
    "fp16-skip": ["train.precision=fp16", "train.nonfinite=skip"],
    # The methods' own after-step work; SwAV's queue of 2 batches is full from step 3 on. DirectPred's
    # torch.linalg.eigh reads its error code back on CUDA (ATen's _linalg_check_errors): its one sync, at
    # each step that sets the predictor (below); DirectCopy, without it, none.
    "directpred-skip": ["method.name=directpred", "train.nonfinite=skip"],
    "directcopy-skip": ["method.name=directcopy", "train.nonfinite=skip"],
    "swav-queue-skip": [
        "method.name=swav",
        "method.swav_queue_length=128",
        "method.swav_epoch_queue_starts=0",
        "train.nonfinite=skip",
    ],
}
ALLOWED_SYNC_SITES = {"directpred-skip": "methods/directpred.py"}


@pytest.mark.parametrize("name", SYNC_FREE_RUNS)
def test_a_training_step_that_does_not_log_makes_no_host_sync(tmp_path, name):
    """The whole train_step of a bf16 (or fp16) run (views, forward, backward, the non-finite and
    GradScaler verdicts, the fused or LARS update, SparseHead's after-step work, the EMA, the methods'
    own) never waits for the GPU: the verdict is read only where the run logs or saves
    (tests/training/test_sync_free.py checks the same on the CPU)."""
    from sparsehead.training.setup import setup
    from sparsehead.training.step import train_step

    cfg = config.load(
        None,
        TINY + ["train.device=cuda", "train.precision=bf16", "data.subset=512", "train.max_steps=6"]
        + SYNC_FREE_RUNS[name] + [f"train.out_dir={tmp_path}"],
    )  # fmt: skip
    syncs = []

    def record_site(message, *_):
        # torch's one-off "prototype feature" notice is not a sync; each real one is logged with the
        # innermost sparsehead line that caused it, so a failure names where the GPU was waited for.
        if "called a synchronizing CUDA operation" in str(message):
            frames = [f for f in traceback.extract_stack() if "sparsehead" in f.filename and "tests" not in f.filename]
            syncs.append(f"{frames[-1].filename.split('sparsehead/')[-1]}:{frames[-1].lineno}" if frames else "?")

    with setup(cfg, tmp_path / "run") as run:
        for images, labels in run.batches():
            if run.state.step < 2:  # warm-up: lazy initialisation (cuDNN, compile, optimiser state) may sync
                train_step(run, images, labels)
                torch.cuda.synchronize()
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = record_site
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    train_step(run, images, labels)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
        logs = {k: v for hook in run.hooks for k, v in hook.logs().items()}  # the reads, at a log line
    if name in ALLOWED_SYNC_SITES:
        assert syncs, "torch.linalg.eigh no longer reads back: methods/directpred.py can say so"
        syncs = [site for site in syncs if not site.startswith(ALLOWED_SYNC_SITES[name])]
    assert len(syncs) <= VIEW_SYNCS, "\n".join(f"{n} x {site}" for site, n in Counter(syncs).most_common())
    assert logs.get("nonfinite_skipped", 0) == 0


# The views make no host sync: the colour jitter and the blur act on the whole batch with per-image
# masks, no nonzero() or boolean index (data/views.py; tests/data/test_views_sync_free.py checks it on the CPU).
VIEW_SYNCS = 0
