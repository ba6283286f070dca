"""data.storage=stream: the folder readers, the worker crops (torchvision's distribution, from the
full-resolution image), randomness from (seed, epoch, index) only, the storage choice, bad input,
and a SIGKILLed stream run resuming bitwise."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler
from torchvision.transforms import v2

from conftest import TINY_FOLDER, assert_same_training_state, make_imagefolder, run_cli, write_jpeg
from sparsehead import config
from sparsehead.data import datasets, readers, storage, stream
from sparsehead.data.crops import RATIO, CropSpec, crop_plan, sample_crops
from sparsehead.data.errors import DataError
from sparsehead.runs import checkpoint

rng = np.random.default_rng(0)


def data_cfg(root, **kw):
    overrides = [f"data.root={root}", "data.cache_dir=null", *[f"data.{k}={v}" for k, v in kw.items()]]
    return config.load(None, overrides).data


def test_imagenet_layout_labels_val_by_train_classes(tmp_path):
    for wnid in ("n01", "n02"):
        for i in range(2):
            write_jpeg(tmp_path / "train" / wnid / f"{wnid}_{i}.JPEG", 20, 24)
    write_jpeg(tmp_path / "val" / "n02" / "ILSVRC2012_val_1.JPEG", 20, 24)
    write_jpeg(tmp_path / "val" / "n01" / "ILSVRC2012_val_2.JPEG", 20, 24)
    train = readers.index(data_cfg(tmp_path, source="imagenet"), "pretrain")
    assert train.classes == ["n01", "n02"] and train.labels.tolist() == [0, 0, 1, 1]
    assert train.paths == ["n01/n01_0.JPEG", "n01/n01_1.JPEG", "n02/n02_0.JPEG", "n02/n02_1.JPEG"]
    val = readers.index(data_cfg(tmp_path, source="imagenet"), "test")
    assert [(p, int(label)) for p, label in zip(val.paths, val.labels)] == [
        ("n01/ILSVRC2012_val_2.JPEG", 0),
        ("n02/ILSVRC2012_val_1.JPEG", 1),
    ]


def test_imagenet100_ships_cmc_list_and_reads_only_those_classes(tmp_path):
    wnids = readers.imagenet100_classes()
    assert len(wnids) == 100 == len(set(wnids)) and wnids[:3] == ["n02869837", "n01749939", "n02488291"]
    assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids)
    for w in wnids:
        write_jpeg(tmp_path / "train" / w / f"{w}_0.JPEG", 8, 8)
    write_jpeg(tmp_path / "train" / "n99999999" / "x.JPEG", 8, 8)  # an ImageNet class outside the 100
    idx = readers.index(data_cfg(tmp_path, source="imagenet100"), "train")
    assert idx.classes == wnids and len(idx) == 100
    assert [p.split("/")[0] for p in idx.paths] == wnids and idx.labels.tolist() == list(range(100))
    os.rename(tmp_path / "train" / wnids[5], tmp_path / "elsewhere")
    with pytest.raises(DataError, match=f"class folder .*{wnids[5]} is missing"):
        readers.index(data_cfg(tmp_path, source="imagenet100"), "train")


def test_tinyimagenet_layout_val_labelled_by_annotations(tmp_path):
    for w in ("n1", "n2"):
        write_jpeg(tmp_path / "train" / w / "images" / f"{w}_0.JPEG", 64, 64)
        (tmp_path / "train" / w / f"{w}_boxes.txt").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / w / f"{w}_boxes.txt").write_text("")
    for i in range(3):
        write_jpeg(tmp_path / "val" / "images" / f"val_{i}.JPEG", 64, 64)
    (tmp_path / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn2\t0\t0\t10\t10\nval_1.JPEG\tn1\t1\t1\t5\t5\nval_2.JPEG\tn2\t0\t0\t3\t3\n"
    )
    cfg = data_cfg(tmp_path, source="tinyimagenet")
    train = readers.index(cfg, "train")
    assert train.paths == ["n1/images/n1_0.JPEG", "n2/images/n2_0.JPEG"] and train.labels.tolist() == [0, 1]
    val = readers.index(cfg, "test")
    assert val.paths == ["images/val_0.JPEG", "images/val_1.JPEG", "images/val_2.JPEG"]
    assert val.labels.tolist() == [1, 0, 1]
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn7\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="class n7 has no train/n7 folder"):
        readers.index(cfg, "test")


def test_index_is_cached_and_relisted_when_a_folder_changes(tmp_path):
    make_imagefolder(tmp_path / "d", per_class=2)
    cfg = config.load(
        None, [f"data.root={tmp_path / 'd'}", f"data.cache_dir={tmp_path / 'c'}", "data.source=imagefolder"]
    ).data
    assert len(readers.index(cfg, "train")) == 4 and list((tmp_path / "c").glob("index-*.pt"))
    write_jpeg(tmp_path / "d" / "train" / "cat" / "new.jpg", 20, 20)
    assert len(readers.index(cfg, "train")) == 5


def test_worker_crop_boxes_follow_torchvision_distribution():
    """Scale and log-aspect statistics of the boxes drawn for the workers vs RandomResizedCrop.get_params."""
    h, w, n = 375, 500, 4000
    ours = sample_crops(n, h, w, (0.08, 1.0), RATIO, torch.Generator().manual_seed(1), "cpu")
    torch.manual_seed(2)
    theirs = torch.tensor(
        [v2.RandomResizedCrop.get_params(torch.empty(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)],
        dtype=torch.float,
    )
    for boxes in (ours, theirs):
        assert (boxes[:, 0] + boxes[:, 2] <= h).all() and (boxes[:, 1] + boxes[:, 3] <= w).all()

    def stat(b):
        return (b[:, 2] * b[:, 3] / (h * w), torch.log(b[:, 3] / b[:, 2]), b[:, 0] / h)

    for a, b in zip(stat(ours), stat(theirs)):
        assert abs(a.mean() - b.mean()) < 0.02 and abs(a.std() - b.std()) < 0.02


def test_crop_from_reduced_decode_matches_crop_of_full_image(tmp_path):
    """The PIL draft path cuts the same region as torchvision's resized_crop on the fully decoded file,
    for global views and local crops of another size alike, each box and flip drawn in plan order."""
    path = tmp_path / "big.jpg"
    write_jpeg(path, 400, 480)
    plan = (CropSpec(16, (0.5, 1.0), 0.5),) * 2 + (CropSpec(8, (0.05, 0.14), 0.5),) * 3
    views = stream.cut_views(str(path), plan, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    drawn = [
        (sample_crops(1, 400, 480, s.scale, RATIO, gen, "cpu")[0], torch.rand(1, generator=gen) < 0.5) for s in plan
    ]
    full = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    assert [tuple(v.shape) for v in views] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 3
    assert all(v.dtype == torch.uint8 for v in views)
    assert any(f.item() for _, f in drawn) and not all(f.item() for _, f in drawn)  # both kinds checked
    for view, spec, (box, flip) in zip(views, plan, drawn):
        top, left, bh, bw = box.round().long().tolist()
        ref = v2.functional.resized_crop(full, top, left, bh, bw, [spec.size] * 2, antialias=True)
        ref = ref.flip(-1) if flip.item() else ref
        assert (view.float() - ref.float()).abs().mean() < 4  # draft's DCT scaling: rounding-level only


PLAN = crop_plan(config.load(None, ["augment.local_crops=2"]).augment, 16)  # two 16 px views, two 7 px crops


def _batches(data, world, rank, workers, epoch=1, first=0):
    sampler = DistributedSampler(range(len(data)), num_replicas=world, rank=rank, shuffle=True, seed=5, drop_last=True)
    feed = stream.StreamFeed(data, sampler, 4 // world, PLAN, 5, workers, torch.device("cpu"))
    sampler.set_epoch(epoch)
    order = list(sampler)
    out = {}
    for b, (batch, labels) in enumerate(feed.epoch(epoch, first), start=first):
        assert [tuple(c.shape[1:]) for c in batch.crops] == [(3, 16, 16)] * 2 + [(3, 7, 7)] * 2
        for k, i in enumerate(order[b * (4 // world) : (b + 1) * (4 // world)]):
            out[i] = torch.cat([c[k].flatten() for c in batch.crops])
    return out


def test_crops_depend_on_seed_epoch_index_only_not_workers_rank_or_resume(tmp_path):
    make_imagefolder(tmp_path, per_class=6)
    data = datasets.load(data_cfg(tmp_path, source="imagefolder", storage="stream", image_size=16), "pretrain")
    assert isinstance(data, stream.StreamSet) and len(data) == 12
    one = _batches(data, 1, 0, workers=0)
    assert len(one) == 12
    assert all(torch.equal(one[i], c) for i, c in _batches(data, 1, 0, workers=1).items())  # a worker process
    ranks = {**_batches(data, 2, 0, workers=0), **_batches(data, 2, 1, workers=0)}  # the DDP shards
    assert ranks.keys() == one.keys() and all(torch.equal(one[i], ranks[i]) for i in one)
    resumed = _batches(data, 1, 0, workers=0, first=2)  # a resume mid-epoch: the same crops
    assert len(resumed) == 4 and all(torch.equal(one[i], c) for i, c in resumed.items())
    other_epoch = _batches(data, 1, 0, workers=0, epoch=2)
    assert not all(torch.equal(one[i], other_epoch[i]) for i in one)


def test_storage_auto_memory_budget_and_bad_input(tmp_path, capsys):
    make_imagefolder(tmp_path, per_class=4)
    fits = data_cfg(tmp_path, source="imagefolder", image_size=16, memory_budget_gb=1)
    assert storage.choose(fits, "pretrain") == "memory" and "auto: memory" in capsys.readouterr().err
    tight = data_cfg(tmp_path, source="imagefolder", image_size=16, memory_budget_gb=1e-6)  # 1 kB
    assert storage.choose(tight, "pretrain") == "stream" and "auto: stream" in capsys.readouterr().err
    with pytest.raises(DataError, match="more than data.memory_budget_gb.*data.storage=stream"):
        storage.choose(data_cfg(tmp_path, source="imagefolder", storage="memory", memory_budget_gb=1e-6), "train")
    with pytest.raises(DataError, match="data.storage=stream reads folder sources"):
        storage.choose(config.load(None, ["data.storage=stream"]).data, "train")
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(None, [f"data.root={tmp_path / 'nowhere'}", "data.source=imagenet"])
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="class folder .*empty holds no images"):
        datasets.load(data_cfg(tmp_path, source="imagefolder", storage="stream"), "train")


RUN = [*TINY_FOLDER, "data.storage=stream", "data.workers=0", "train.epochs=3", "train.checkpoint_every=2"]


# In the second-kernel pass too: under oneDNN's AVX2 kernels its width-4 network trains contiguous
# (models/cpu_layout.py), whose channels_last weight gradient aborted it there before.
@pytest.mark.numerics
def test_sigkilled_stream_run_resumes_bitwise(tmp_path):
    make_imagefolder(tmp_path / "d", per_class=8)  # 16 images: 2 steps an epoch, 6 in all
    args = RUN + [f"data.root={tmp_path / 'd'}"]
    ref = run_cli("pretrain", *args, "--run-dir", str(tmp_path / "ref"), env={"OMP_NUM_THREADS": "1"})
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = run_cli(
        "pretrain",
        *args,
        "--run-dir",
        str(tmp_path / "run"),
        env={"OMP_NUM_THREADS": "1", "SPARSEHEAD_TEST_SIGKILL": "step:3"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    done = run_cli("pretrain", "--resume", str(tmp_path / "run"), env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and "resuming" in done.stderr, done.stderr[-2000:]
    a, b = (checkpoint.load(checkpoint.find(tmp_path / r)) for r in ("ref", "run"))
    assert_same_training_state(a, b, 6)


def test_reduced_decode_scales_each_axis_of_the_crop_box_by_its_own_factor(tmp_path):
    """A JPEG decoded at 1/8 is ceil(W/8) x ceil(H/8): 1001 x 123 -> 126 x 16, x scale 0.1259 but y
    scale 0.1301; a box's rows must follow the y scale (the whole image is the whole decoded image)."""
    write_jpeg(tmp_path / "wide.jpg", 123, 1001)
    with stream.opened_image(str(tmp_path / "wide.jpg")) as opened:
        pil, scale = stream._decode(opened, str(tmp_path / "wide.jpg"), (120, 15))
    assert pil.size == (126, 16) and scale == pytest.approx((126 / 1001, 16 / 123))
    assert stream._box(pil, scale, 0, 0, 123, 1001) == pytest.approx((0, 0, 126, 16))
    assert stream._box(pil, scale, 61.5, 500.5, 61.5, 500.5) == pytest.approx((63, 8, 126, 16))
    crops = stream.cut_views(str(tmp_path / "wide.jpg"), (CropSpec(16, (0.9, 1.0), 0.5),) * 2, torch.Generator())
    assert [c.shape for c in crops] == [(3, 16, 16)] * 2 and crops[0].dtype == torch.uint8


def test_bad_images_skip_leaves_unreadable_files_out_of_a_stream(tmp_path):
    make_imagefolder(tmp_path, per_class=6)
    good = tmp_path / "train" / "cat" / "0.jpg"
    (tmp_path / "train" / "cat" / "empty.jpg").write_bytes(b"")
    (tmp_path / "train" / "dog" / "text.jpg").write_text("not an image")
    (tmp_path / "train" / "dog" / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.warns(UserWarning, match="skipped 3 unreadable image"):
        data = datasets.load(
            data_cfg(tmp_path, source="imagefolder", storage="stream", bad_images="skip", workers=0), "train"
        )
    assert len(data) == 12 and data.skipped == 3 and data.labels.tolist() == [0] * 6 + [1] * 6
    assert not any(p.endswith(("empty.jpg", "text.jpg", "truncated.jpg")) for p in data.index.paths)
    assert torch.cat(list(data.eval_batches(5))).shape == (12, 3, 32, 32)  # every kept file decodes
    failing = datasets.load(data_cfg(tmp_path, source="imagefolder", storage="stream", workers=0), "train")
    assert failing.skipped == 0 and len(failing) == 15  # fail: the index as listed, stopping at a bad file
    with pytest.raises(DataError, match="cannot read image .*empty.jpg.*data.bad_images=skip"):
        list(failing.eval_batches(16))


def test_a_stream_run_trains_past_unreadable_files_with_skip(tmp_path):
    from sparsehead.training.loop import pretrain

    make_imagefolder(tmp_path / "d", per_class=8)
    (tmp_path / "d" / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    args = RUN + [f"data.root={tmp_path / 'd'}", "data.bad_images=skip", "train.max_steps=2"]
    cfg = config.load(None, args + [f"train.out_dir={tmp_path}", "train.run_name=skip"])
    with pytest.warns(UserWarning, match="unreadable"):
        result = pretrain(cfg)
    assert checkpoint.load(checkpoint.find(result["run_dir"]))["step"] == 2
