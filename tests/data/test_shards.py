"""data.source=webdataset and data.source=parquet: shard sets written here with tarfile and pyarrow
(not by any sparsehead writer) from real CIFAR-10 JPEGs, read against an independent listing, decoded
to the folder source's pixels, trained streamed and in memory, checked for bad input, stopped and
resumed bitwise, and split over 2 gloo processes x 2 workers with each sample seen once an epoch."""

from __future__ import annotations

import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from conftest import CIFAR10_ROOT, TINY_FOLDER, assert_same_training_state, requires_cifar10, run_cli
from ddp_harness import run_on_ranks
from sparsehead import api, config
from sparsehead.data import datasets, image_check, records, stream
from sparsehead.data.crops import crop_plan
from sparsehead.data.errors import DataError
from sparsehead.runs import checkpoint

pytestmark = requires_cifar10
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (pip install 'sparsehead[shards]')")

CLASSES = ("airplane", "automobile", "bird", "cat")
PER_CLASS = {"train": 12, "test": 4}
SOURCE = {"folder": "imagefolder", "tar": "webdataset", "parquet": "parquet"}
PLAN = crop_plan(config.load(None, ["augment.local_crops=1"]).augment, 16)  # two 16 px views, one 7 px crop


def picked(split: str) -> list[tuple[int, Path]]:
    """(label, JPEG) of the images the sets hold, in the folder source's order (class, then file name)."""
    return [
        (label, path)
        for label, name in enumerate(CLASSES)
        for path in sorted((CIFAR10_ROOT / split / name).glob("*.jpg"))[: PER_CLASS[split]]
    ]


def key(label: int, path: Path) -> str:
    return f"c{label}_{path.stem}"


def write_tar(path: Path, samples, image_bytes=None) -> None:
    """A WebDataset shard: KEY.jpg, KEY.cls and an extra KEY.json (left alone) per sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for label, jpeg in samples:
            members = {
                "jpg": image_bytes if image_bytes is not None else jpeg.read_bytes(),
                "cls": str(label).encode(),
                "json": b"{}",
            }
            for ext, raw in members.items():
                info = tarfile.TarInfo(f"{key(label, jpeg)}.{ext}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))


HF_META = {
    "huggingface": json.dumps({"info": {"features": {"label": {"names": list(CLASSES), "_type": "ClassLabel"}}}})
}


def write_parquet(path: Path, samples, row_group_size: int = 5) -> None:
    """A Hugging Face-layout shard: `img` {bytes, path} structs, `label` integers, ClassLabel names."""
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    images = [{"bytes": jpeg.read_bytes(), "path": jpeg.name} for _, jpeg in samples]
    table = pa.table({"img": images, "label": pa.array([label for label, _ in samples], pa.int64())})
    pq.write_table(table.replace_schema_metadata(HF_META), path, row_group_size=row_group_size)


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """The same 48 train and 16 test images as a JPEG folder, as tar shards and as parquet shards."""
    base = tmp_path_factory.mktemp("sets")
    train, test = picked("train"), picked("test")
    for split, items in (("train", train), ("test", test)):
        for label, jpeg in items:
            (base / "folder" / split / CLASSES[label]).mkdir(parents=True, exist_ok=True)
            shutil.copy(jpeg, base / "folder" / split / CLASSES[label] / jpeg.name)
    write_tar(base / "tar" / "train" / "shard-000000.tar", train[:20])  # shards of unequal sizes
    write_tar(base / "tar" / "train" / "shard-000001.tar", train[20:])
    write_tar(base / "tar" / "val" / "shard-000000.tar", test)
    write_parquet(base / "parquet" / "data" / "train-00000-of-00002.parquet", train[:30])
    write_parquet(base / "parquet" / "data" / "train-00001-of-00002.parquet", train[30:])
    write_parquet(base / "parquet" / "data" / "validation-00000-of-00001.parquet", test)
    return {kind: base / kind for kind in SOURCE}


def data_cfg(root: Path, kind: str, *extra: str):
    return config.load(None, [f"data.source={SOURCE[kind]}", f"data.root={root}", "data.cache_dir=null", *extra]).data


@pytest.mark.parametrize("kind", ["tar", "parquet"])
def test_index_lists_every_sample_with_its_label_and_bytes(roots, kind, tmp_path):
    cfg = data_cfg(roots[kind], kind, f"data.cache_dir={tmp_path}")
    listed = {}
    for split in ("train", "test"):
        idx, expected = records.index(cfg, split), picked(split)
        assert len(idx) == len(expected) and idx.labels.tolist() == [label for label, _ in expected]
        assert all(idx.source(i) == jpeg.read_bytes() for i, (_, jpeg) in enumerate(expected))
        assert idx.classes == (["0", "1", "2", "3"] if kind == "tar" else list(CLASSES))
        listed[split] = idx
    assert len(list(tmp_path.glob("shards-*.pt"))) == 2  # one cached index per split
    again = records.index(cfg, "train")  # from the cache
    assert again.paths == listed["train"].paths and again.source(47) == listed["train"].source(47)


@pytest.mark.parametrize("kind", ["tar", "parquet"])
def test_shards_decode_to_the_folder_sources_pixels(roots, kind):
    size = ["data.image_size=16", "data.workers=0"]
    for split in ("train", "test"):
        folder = datasets.load(data_cfg(roots["folder"], "folder", "data.storage=memory", *size), split)
        shards = datasets.load(data_cfg(roots[kind], kind, "data.storage=memory", *size), split)
        assert torch.equal(folder.images, shards.images) and torch.equal(folder.labels, shards.labels)
    folder = datasets.load(data_cfg(roots["folder"], "folder", "data.storage=stream", *size), "train")
    shards = datasets.load(data_cfg(roots[kind], kind, "data.storage=stream", *size), "train")
    assert isinstance(shards, stream.StreamSet) and len(shards) == 48
    assert torch.equal(torch.cat(list(folder.eval_batches(16))), torch.cat(list(shards.eval_batches(16))))
    ours, theirs = stream.ViewCrops(shards, PLAN, 7), stream.ViewCrops(folder, PLAN, 7)
    for i in (0, 21, 47):  # the same boxes and flips from (seed, epoch, index): the same crops
        assert all(torch.equal(a, b) for a, b in zip(ours[(2, i)][0], theirs[(2, i)][0]))


def test_a_test_label_unknown_to_training_is_an_error_before_any_work(roots, tmp_path):
    shutil.copytree(roots["tar"] / "train", tmp_path / "train")
    write_tar(tmp_path / "val" / "shard-000000.tar", [(7, picked("test")[0][1])])
    with pytest.raises(DataError, match=r"val/\*\.tar holds label 7 .* training split lacks"):
        image_check.check_splits(data_cfg(tmp_path, "tar"))


def test_damaged_shards_and_records_fail_in_one_line_or_are_skipped_and_counted(roots, tmp_path):
    shutil.copytree(roots["tar"], tmp_path / "t")
    write_tar(tmp_path / "t" / "train" / "shard-000002.tar", picked("train")[:1], image_bytes=b"not a jpeg")
    with pytest.raises(DataError, match=r"1 unreadable image\(s\) in .*train/\*\.tar:\n.*shard-000002.tar/"):
        image_check.check_splits(data_cfg(tmp_path / "t", "tar"))
    for storage in ("stream", "memory"):
        with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
            data = datasets.load(
                data_cfg(tmp_path / "t", "tar", f"data.storage={storage}", "data.bad_images=skip"), "train"
            )
        assert len(data) == 48 and data.skipped == 1
    shard = tmp_path / "t" / "train" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])  # cut inside a member
    with pytest.raises(DataError, match="shard .*shard-000001.tar is damaged or not an uncompressed tar"):
        records.index(data_cfg(tmp_path / "t", "tar"), "train")
    shutil.copytree(roots["parquet"], tmp_path / "p")
    (tmp_path / "p" / "data" / "train-00001-of-00002.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(DataError, match="cannot read parquet file .*train-00001-of-00002.parquet"):
        records.index(data_cfg(tmp_path / "p", "parquet"), "train")


def test_parquet_without_pyarrow_names_the_extra(roots, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r'needs pyarrow: pip install "sparsehead\[shards\]"'):
        records.index(data_cfg(roots["parquet"], "parquet"), "train")


def _seen_on_rank(rank: int, roots: dict) -> dict:
    """The crops this rank's feed hands out in epoch 1 (2 DataLoader workers), for each format."""
    out = {}
    for kind in ("tar", "parquet"):
        data = stream.StreamSet.open(data_cfg(roots[kind], kind, "data.image_size=16", "data.workers=2"), "pretrain")
        sampler = DistributedSampler(range(len(data)), num_replicas=2, rank=rank, shuffle=True, seed=3, drop_last=True)
        feed = stream.StreamFeed(data, sampler, 4, PLAN, 7, 2, torch.device("cpu"))
        crops = [
            torch.cat([c[k].flatten() for c in views.crops]) for views, labels in feed.epoch(1, 0) for k in range(4)
        ]
        out[kind] = torch.stack(crops)
    return out


def test_two_processes_with_two_workers_each_see_every_sample_once_an_epoch(roots):
    ranks = run_on_ranks(_seen_on_rank, roots)
    for kind in ("tar", "parquet"):
        data = stream.StreamSet.open(data_cfg(roots[kind], kind, "data.image_size=16"), "pretrain")
        every = [torch.cat([c.flatten() for c in stream.ViewCrops(data, PLAN, 7)[(1, i)][0]]) for i in range(48)]
        seen = torch.cat([r[kind] for r in ranks])
        assert seen.shape[0] == 48
        matches = [[i for i, c in enumerate(every) if torch.equal(c, s)] for s in seen]
        assert sorted(m[0] for m in matches) == list(range(48)) and all(len(m) == 1 for m in matches)


SIGTERM_PLUGIN = """
import os, signal
from sparsehead.core.step_hook import StepHook
from sparsehead.training.hooks import register_hook

@register_hook
class StopAtStep3(StepHook):
    def __init__(self, cfg, method):
        self.sent = False

    def stop_reason(self, step):
        if step == 3 and not self.sent and os.environ.get("SHARDS_TEST_SIGTERM"):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler's pre-emption: the run stops at a boundary
        return None
"""


def test_a_tar_stream_run_stopped_by_sigterm_resumes_bitwise_and_evaluates(roots, tmp_path):
    """3 epochs of 6 steps from the tar shards, 2 workers; SIGTERM after step 3 (mid-epoch), resumed."""
    (tmp_path / "sigterm_at_step3.py").write_text(SIGTERM_PLUGIN)
    run = [*TINY_FOLDER, "data.source=webdataset", f"data.root={roots['tar']}", "data.storage=stream"]
    run += ["data.workers=2", "train.epochs=3", "train.checkpoint_every=0"]
    env = {"OMP_NUM_THREADS": "1", "SPARSEHEAD_PLUGINS": "sigterm_at_step3"}
    env["PYTHONPATH"] = f"{Path(__file__).resolve().parents[2] / 'src'}:{tmp_path}"
    ref = run_cli("pretrain", *run, "--run-dir", str(tmp_path / "ref"), env=env)
    assert ref.returncode == 0, ref.stderr[-2000:]
    stopped = run_cli("pretrain", *run, "--run-dir", str(tmp_path / "run"), env={**env, "SHARDS_TEST_SIGTERM": "1"})
    assert stopped.returncode == 75 and "stopped by SIGTERM" in stopped.stderr, stopped.stderr[-2000:]
    done = run_cli("pretrain", "--resume", str(tmp_path / "run"), env=env)
    assert done.returncode == 0 and "resuming" in done.stderr, done.stderr[-2000:]
    a, b = (checkpoint.load(checkpoint.find(tmp_path / r)) for r in ("ref", "run"))
    assert_same_training_state(a, b, 18)
    record = api.evaluate(tmp_path / "ref", "knn", k_weighted=20)
    assert record["data"]["train_images"] == 48 and record["data"]["test_images"] == 16
    assert 0 <= record["r"]["top1"] <= 1


def test_a_sigkilled_parquet_stream_run_resumes_bitwise_and_analyze_and_export_work(roots, tmp_path):
    """One epoch of 6 steps streamed from the parquet shards, killed (SIGKILL) after step 3 and resumed:
    bitwise the unbroken run; then evaluate, analyze and export on it."""
    run = [*TINY_FOLDER, "data.source=parquet", f"data.root={roots['parquet']}", "data.storage=stream"]
    run += ["data.workers=0", "train.epochs=1", "train.checkpoint_every=2"]
    env = {"OMP_NUM_THREADS": "1"}
    ref = run_cli("pretrain", *run, "--run-dir", str(tmp_path / "ref"), env=env)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = run_cli(
        "pretrain", *run, "--run-dir", str(tmp_path / "run"), env={**env, "SPARSEHEAD_TEST_SIGKILL": "step:3"}
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    done = run_cli("pretrain", "--resume", str(tmp_path / "run"), env=env)
    assert done.returncode == 0 and "resuming" in done.stderr, done.stderr[-2000:]
    a, b = (checkpoint.load(checkpoint.find(tmp_path / r)) for r in ("ref", "run"))
    assert_same_training_state(a, b, 6)
    record = api.evaluate(tmp_path / "ref", "knn", k_weighted=20)
    assert record["data"]["source"] == "parquet" and record["data"]["test_images"] == 16
    assert 0 <= record["r"]["top1"] <= 1
    assert run_cli("analyze", str(tmp_path / "ref"), "--device", "cpu", env=env).returncode == 0
    assert json.loads((tmp_path / "ref" / "analysis" / "analysis.json").read_text())["data"]["source"] == "parquet"
    exported = run_cli("export", str(tmp_path / "ref"), "--out", str(tmp_path / "backbone.pt"), env=env)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert torch.load(tmp_path / "backbone.pt", weights_only=True)
