"""Multi-crop: the crop generator's statistics against torchvision's RandomResizedCrop, SwAV's and
SimCLR's multi-crop losses (two or three global crops) against loops written here, SwAV's queue (in
the loss, restored on resume), and the config errors of methods that take two views only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from scipy.stats import ks_2samp

from conftest import TINY, TINY_FOLDER, make_imagefolder, numpy_sinkhorn
from sparsehead import config
from sparsehead.core.errors import ConfigError
from sparsehead.data.crops import sample_crops
from sparsehead.data.views import ViewGenerator
from sparsehead.runs import checkpoint
from sparsehead.runs.model import build_model
from sparsehead.training.loop import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")
LOCAL = ["augment.local_crops=4", "augment.local_size=8"]


def crop_stats(boxes: np.ndarray, side: int) -> dict:
    top, left, h, w = boxes.T
    return {"scale": h * w / side**2, "log_ratio": np.log(w / h), "top": top, "left": left}


@pytest.mark.parametrize("scale", [(0.05, 0.14), (0.14, 1.0)])
def test_crop_boxes_follow_torchvision_random_resized_crop(scale):
    n, side = 6000, 32
    ours = sample_crops(n, side, side, scale, (3 / 4, 4 / 3), torch.Generator().manual_seed(0), "cpu").double().numpy()
    torch.manual_seed(0)
    image = torch.zeros(3, side, side)
    theirs = np.array(
        [T.RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3]) for _ in range(n)], dtype=float
    )
    a, b = crop_stats(ours, side), crop_stats(theirs, side)
    for key in a:
        assert ks_2samp(a[key], b[key]).pvalue > 1e-3, key
    # The test can fail: the other size's crops are told apart at once.
    other = (0.14, 1.0) if scale == (0.05, 0.14) else (0.05, 0.14)
    wrong = sample_crops(n, side, side, other, (3 / 4, 4 / 3), torch.Generator().manual_seed(1), "cpu").double().numpy()
    assert ks_2samp(crop_stats(wrong, side)["scale"], b["scale"]).pvalue < 1e-10


def test_view_generator_adds_global_and_local_crops_after_the_unchanged_two_views():
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    plain = ViewGenerator(config.AugmentConfig(), 16, [0.5] * 3, [0.25] * 3)
    multi = ViewGenerator(config.AugmentConfig(global_crops=3, local_crops=3), 16, [0.5] * 3, [0.25] * 3)
    two = plain(images, torch.Generator().manual_seed(3))
    crops = multi(images, torch.Generator().manual_seed(3))
    assert len(two) == 2 and len(crops) == 6
    assert all(torch.equal(a, b) for a, b in zip(two, crops[:2]))  # bitwise: the two-view case unchanged
    assert [c.shape[-1] for c in crops] == [16, 16, 16, 7, 7, 7]  # auto local size: round(16 * 96 / 224)
    assert len(multi(images, torch.Generator(), multi_crop=False)) == 2


def tiny_method(name, *extra):
    torch.manual_seed(0)
    cfg = config.load(None, TINY + [f"method.name={name}", "train.batch_size=8", *extra])
    return build_model(cfg).double()


def crops(num_local: int, n: int = 8, seed: int = 1, num_global: int = 2):
    g = torch.Generator().manual_seed(seed)
    sizes = [16] * num_global + [8] * num_local
    return [torch.randn(n, 3, s, s, generator=g, dtype=torch.float64) for s in sizes]


def embeddings(method, views):
    """z of every view in training mode: the views of one size through the backbone as one batch
    (BatchNorm statistics over all of them, as SwAV's code), then the head on each view."""
    n, r = len(views[0]), {}
    with torch.no_grad():
        for size in {x.shape[-1] for x in views}:
            same = [i for i, x in enumerate(views) if x.shape[-1] == size]
            out = method.backbone(torch.cat([views[i] for i in same]))
            r.update({i: out[k * n : (k + 1) * n] for k, i in enumerate(same)})
        return [method.projector(r[i]).numpy() for i in range(len(views))]


def log_softmax_rows(s):
    s = s - s.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def swav_reference(zs, prototypes, tau=0.1, queue=None, num_global=2):
    """Codes of the global crops (the queue's scores before the batch), each predicted from
    every other crop: mean over the global crops of the mean over the other crops of the CE."""
    scores = [(z / np.linalg.norm(z, axis=1, keepdims=True)) @ prototypes.T for z in zs]
    total = 0.0
    for i in range(num_global):
        s = scores[i] if queue is None else np.concatenate([queue[i] @ prototypes.T, scores[i]])
        q = numpy_sinkhorn(s)[-len(scores[i]) :]
        ces = [-(q * log_softmax_rows(scores[v] / tau)).sum(axis=1).mean() for v in range(len(zs)) if v != i]
        total += sum(ces) / len(ces)
    return total / num_global


@pytest.mark.parametrize("num_global, num_local", [(2, 0), (2, 4), (3, 4)])
def test_swav_loss_over_all_crops_matches_loops(num_global, num_local):
    extra = (LOCAL if num_local else []) + [f"augment.global_crops={num_global}"]
    method = tiny_method("swav", "method.swav_prototypes=12", *extra)
    views = crops(num_local, num_global=num_global)
    loss = method(*views).loss.item()
    ref = swav_reference(embeddings(method, views), method.prototypes.weight.detach().numpy(), num_global=num_global)
    assert loss == pytest.approx(ref, rel=1e-9)


def nt_xent_loops(z1, z2, tau):
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n, total = len(z1), 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        logits = [z[i] @ z[j] / tau for j in range(2 * n) if j != i]
        total += -(z[i] @ z[positive] / tau) + np.log(np.sum(np.exp(logits)))
    return total / (2 * n)


@pytest.mark.parametrize("num_global", [2, 3])
def test_simclr_multi_crop_averages_nt_xent_over_global_pairs(num_global):
    method = tiny_method("simclr", *LOCAL, f"augment.global_crops={num_global}")
    views = crops(4, num_global=num_global)
    zs = embeddings(method, views)
    globals_ = range(num_global)
    pairs = [(a, b) for a in globals_ for b in globals_ if a < b]
    pairs += [(g, v) for g in globals_ for v in range(num_global, num_global + 4)]
    ref = np.mean([nt_xent_loops(zs[a], zs[b], 0.5) for a, b in pairs])
    assert method(*views).loss.item() == pytest.approx(ref, rel=1e-9)


def test_swav_queue_enters_the_loss_once_full():
    method = tiny_method(
        "swav", "method.swav_prototypes=12", "method.swav_queue_length=16", "method.swav_epoch_queue_starts=0"
    )
    method.set_epoch(0)
    for seed in (1, 2):  # two batches of 8 fill the queue of 16
        method(*crops(0, seed=seed))
    queue = method.queue.numpy().copy()
    assert np.abs(queue).sum(axis=2).min() > 0  # every row written
    views = crops(0, seed=3)
    zs, protos = embeddings(method, views), method.prototypes.weight.detach().numpy()
    loss = method(*views).loss.item()
    assert loss == pytest.approx(swav_reference(zs, protos, queue=queue), rel=1e-9)
    assert abs(loss - swav_reference(zs, protos)) > 1e-4  # the queue changed the codes
    newest = zs[0][:] / np.linalg.norm(zs[0], axis=1, keepdims=True)
    np.testing.assert_allclose(method.queue[0, :8].numpy(), newest, rtol=1e-12)  # newest first


def test_swav_ignores_a_queue_not_yet_full_whatever_the_host_row_count():
    """The rows counted on the host are an upper bound only (a skipped step's are put back on the device,
    a loaded queue's are not counted): where the count says full but the last row is unwritten, the
    device picks the codes without the queue, those of a method that counted exactly."""
    counted, overcounted = (
        tiny_method(
            "swav", "method.swav_prototypes=12", "method.swav_queue_length=24", "method.swav_epoch_queue_starts=0"
        )
        for _ in range(2)
    )
    for method in (counted, overcounted):
        method.set_epoch(0)
        method(*crops(0, seed=1))  # 8 of 24 rows
    overcounted.queue_rows = 24
    views = crops(0, seed=2)
    assert torch.equal(counted(*views).loss, overcounted(*views).loss)
    assert torch.equal(counted.queue, overcounted.queue)


def test_swav_queue_and_multi_crop_resume_bitwise(tmp_path, capsys):
    """Three global crops (three queues) and two local crops through the training loop."""
    threads = torch.get_num_threads()
    run = TINY + [
        "data.subset=64",
        "train.batch_size=16",
        "train.epochs=2",
        "train.threads=1",
        "method.name=swav",
        "method.swav_prototypes=12",
        "method.swav_queue_length=32",
        "method.swav_epoch_queue_starts=1",
        "augment.global_crops=3",
        "augment.local_crops=2",
        "augment.local_size=8",
    ]
    pretrain(config.load(None, run + [f"train.out_dir={tmp_path}"]), tmp_path / "unbroken")
    # Stopped when the queue is full (steps 5, 6 of epoch 1 fill it), resumed for steps 7 and 8 that use it.
    pretrain(config.load(None, run + [f"train.out_dir={tmp_path}", "train.max_steps=6"]), tmp_path / "resumed")
    capsys.readouterr()
    pretrain(config.load(None, run + [f"train.out_dir={tmp_path}"]), tmp_path / "resumed")
    assert "(step 6)" in capsys.readouterr().err  # resumed, not started over
    torch.set_num_threads(threads)
    a, b = (checkpoint.load(checkpoint.find(tmp_path / r)) for r in ("unbroken", "resumed"))
    assert a["step"] == b["step"] == 8
    assert a["model"]["queue"].shape[0] == 3 and a["model"]["queue"].abs().sum(dim=2).min() > 0
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_two_view_methods_refuse_multi_crop(tiny_cfg):
    with pytest.raises(ConfigError, match=r"augment.local_crops: method.name=byol .*local_crops=0.*swav"):
        tiny_cfg("method.name=byol", "augment.local_crops=2")
    with pytest.raises(ConfigError, match=r"augment.global_crops: method.name=byol .*global_crops=2.*simclr, swav"):
        tiny_cfg("method.name=byol", "augment.global_crops=3")
    with pytest.raises(ConfigError, match=r"augment.global_crops: 1 is out of range; it must be >= 2"):
        tiny_cfg("method.name=swav", "augment.global_crops=1")
    with pytest.raises(ConfigError, match="swav_queue_length: 20 is not a multiple of train.batch_size=64"):
        tiny_cfg("method.name=swav", "method.swav_queue_length=20")
    with pytest.raises(ConfigError, match="augment.local_size: 20 exceeds data.image_size=16"):
        tiny_cfg("method.name=swav", "augment.local_crops=2", "augment.local_size=20")


def test_multi_crop_trains_on_streamed_data(tmp_path, capsys):
    """The workers cut the global and local crops, each at its size: data.storage=stream, and auto
    choosing stream over its memory budget, train SwAV's multi-crop end to end."""
    make_imagefolder(tmp_path / "d", per_class=8)  # 16 images: 2 steps an epoch
    run = TINY_FOLDER + [
        f"data.root={tmp_path / 'd'}",
        "data.workers=0",
        "train.max_steps=2",
        "method.name=swav",
        "method.swav_prototypes=4",
        "augment.global_crops=3",
        "augment.local_crops=2",
        "augment.local_size=8",
        f"train.out_dir={tmp_path}",
    ]
    for name, storage in (("stream", "data.storage=stream"), ("auto", "data.memory_budget_gb=1e-6")):
        result = pretrain(config.load(None, run + [storage]), tmp_path / name)
        assert checkpoint.load(checkpoint.find(result["run_dir"]))["step"] == 2
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses = [row["loss"] for row in rows if "loss" in row]
        assert len(losses) == 2 and np.isfinite(losses).all()
    assert "data.storage=auto: stream for the pretrain set" in capsys.readouterr().err
