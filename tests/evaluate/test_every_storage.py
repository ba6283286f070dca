"""Every command on every folder layout (imagefolder, imagenet, tinyimagenet), decoded in memory and
streamed: pretrain, `sparsehead evaluate` with each protocol, `sparsehead analyze` and
`sparsehead export` end to end, and the same evaluation crops and features from both storages of
the same files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_FOLDER, run_cli
from sparsehead import cli, config
from sparsehead.data import datasets
from sparsehead.evaluate.features import extract
from sparsehead.runs.model import load_trained

CLASSES = ("n01440764", "n01443537")
LAYOUTS = ("imagefolder", "imagenet", "tinyimagenet")


def image_path(root, layout, split, c, i):
    """Where image i of class c lies in `layout` (train: 20 a class, test: 10 a class)."""
    wnid = CLASSES[c]
    if layout == "imagefolder":
        return root / split / wnid / f"{i}.jpg"
    if split == "train":
        return root / "train" / wnid / ("images" if layout == "tinyimagenet" else "") / f"{wnid}_{i}.JPEG"
    if layout == "imagenet":
        return root / "val" / wnid / f"val_{c}_{i}.JPEG"
    return root / "val" / "images" / f"val_{c}_{i}.JPEG"  # tinyimagenet: labelled by val_annotations.txt


def make_folder(root, layout="imagefolder", train_per_class=20, test_per_class=10):
    """Tiny JPEGs of varied sizes (40-60 px a side, landscape and portrait), a colour per class."""
    rng = np.random.default_rng(0)
    notes = []
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(len(CLASSES)):
            for i in range(n):
                path = image_path(root, layout, split, c, i)
                path.parent.mkdir(parents=True, exist_ok=True)
                h, w = (int(v) for v in rng.integers(40, 61, size=2))
                img = rng.integers(0, 80, size=(h, w, 3)) + np.array([160, 40, 90]) * (np.arange(3) == c)
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)
                notes.append(f"{path.name}\t{CLASSES[c]}\t0\t0\t{w}\t{h}\n")
    if layout == "tinyimagenet":
        (root / "val" / "val_annotations.txt").write_text("".join(notes[-len(CLASSES) * test_per_class :]))


def tiny(root, out, layout, storage):
    return [
        *TINY_FOLDER,
        f"data.source={layout}",
        f"data.root={root}",
        f"data.storage={storage}",
        f"data.workers={1 if storage == 'stream' else 0}",  # a worker process decodes the streamed batches
        "train.max_steps=3",
        f"train.out_dir={out}",
        f"train.run_name={layout}-{storage}",
    ]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    made = {}
    for layout in LAYOUTS:
        made[layout] = tmp_path_factory.mktemp(layout)
        make_folder(made[layout], layout)
    return made


@pytest.fixture(scope="module")
def runs(folders, tmp_path_factory):
    """Pretrained run folders by (layout, storage), each made when a test first asks for it."""
    out, made = tmp_path_factory.mktemp("runs"), {}

    def run(layout, storage):
        if (layout, storage) not in made:
            proc = run_cli("pretrain", *tiny(folders[layout], out, layout, storage), env={"OMP_NUM_THREADS": "1"})
            assert proc.returncode == 0, proc.stderr[-3000:]
            made[layout, storage] = out / f"{layout}-{storage}"
        return made[layout, storage]

    return run


# The smallest work of each protocol (a fixed weight decay, one label fraction, one epoch): six runs.
PROTOCOL_ARGS = {
    "knn": ["--k", "3", "--k-weighted", "10"],
    "ncc": [],
    "linear": ["--weight-decay", "1e-4"],
    "semisup": ["--fractions", "0.5", "--epochs", "1", "--batch-size", "8"],
}


@pytest.mark.parametrize("storage", ["memory", "stream"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_command_on_every_layout(runs, layout, storage, tmp_path):
    run = runs(layout, storage)
    crop = 0.875 if layout == "imagenet" else 1.0  # ImageNet's Resize + CenterCrop; the small sources whole
    for protocol, extra in PROTOCOL_ARGS.items():
        assert cli.main(["evaluate", str(run), "--protocol", protocol, "--device", "cpu", *extra]) == 0, protocol
        record = json.loads((run / "eval" / f"{protocol}.json").read_text())
        assert record["data"]["train_images"] == 40 and record["data"]["test_images"] == 20
        assert record["data"]["source"] == layout and record["data"]["eval_crop"] == crop
        assert "r" in record
    assert cli.main(["analyze", str(run), "--device", "cpu"]) == 0
    analysis = json.loads((run / "analysis" / "analysis.json").read_text())
    assert analysis["data"]["storage"] == storage and "r" in analysis and "z" in analysis
    assert (run / "analysis" / "report.html").is_file()
    assert cli.main(["export", str(run), "--out", str(tmp_path / "backbone.pt")]) == 0
    meta = json.loads((tmp_path / "backbone.json").read_text())
    trained = load_trained(run, torch.device("cpu"))
    mean, std = datasets.load(trained.cfg.data, "pretrain").channel_stats()  # the data set's own answer
    assert meta["normalize"]["mean"] == pytest.approx(mean) and meta["normalize"]["std"] == pytest.approx(std)
    assert meta["eval_crop"] == crop and meta["image_size"] == 16
    weights = torch.load(tmp_path / "backbone.pt", weights_only=True)
    assert all(torch.equal(v, trained.method.backbone.state_dict()[k]) for k, v in weights.items())


@pytest.mark.parametrize("layout", ["imagefolder", "imagenet"])  # crop ratios 1.0 and 0.875
def test_memory_and_stream_give_the_same_evaluation_features(runs, layout):
    trained = load_trained(runs(layout, "memory"), torch.device("cpu"))
    sets = {
        storage: datasets.load(
            config.with_data_overrides(trained.cfg, (f"storage={storage}", "workers=0")).data, "test"
        )
        for storage in ("memory", "stream")
    }
    assert type(sets["memory"]) is not type(sets["stream"])
    assert sets["memory"].crop_ratio == sets["stream"].crop_ratio == (0.875 if layout == "imagenet" else 1.0)
    for a, b in zip(sets["memory"].eval_batches(7), sets["stream"].eval_batches(7)):
        assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape and a.shape[1:] == (3, 16, 16)
        assert torch.equal(a, b)  # the same decode, the same centre crops
    assert torch.equal(sets["memory"].labels, sets["stream"].labels)
    (r_m, z_m), (r_s, z_s) = (extract(trained.method, sets[s], trained.views, torch.device("cpu"), 6) for s in sets)
    assert r_m.shape == (20, r_m.shape[1]) and z_m.shape[0] == 20
    torch.testing.assert_close(r_m, r_s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z_m, z_s, rtol=1e-5, atol=1e-5)


def test_both_storages_of_the_same_files_export_the_same_normalisation(runs, tmp_path):
    metas = []
    for storage in ("memory", "stream"):  # 40 images: the stream's statistics sample is every image
        assert cli.main(["export", str(runs("imagefolder", storage)), "--out", str(tmp_path / f"{storage}.pt")]) == 0
        metas.append(json.loads((tmp_path / f"{storage}.json").read_text())["normalize"])
    assert metas[0]["mean"] == pytest.approx(metas[1]["mean"], abs=1e-5)
    assert metas[0]["std"] == pytest.approx(metas[1]["std"], abs=1e-5)


def test_eval_batches_in_order_for_given_indices(folders):
    for storage in ("memory", "stream"):
        flags = [
            f"data.root={folders['imagefolder']}",
            "data.source=imagefolder",
            "data.cache_dir=null",
            "data.workers=0",
        ]
        data = datasets.load(config.load(None, [*flags, f"data.storage={storage}"]).data, "train")
        every = torch.cat(list(data.eval_batches(16)))
        assert every.shape == (len(data), *data.item_shape)
        picked = [5, 0, 33, 12]
        assert torch.equal(torch.cat(list(data.eval_batches(3, indices=picked))), every[picked])
        assert [len(b) for b in data.eval_plan([[1, 2], [3], [0, 4, 5]])] == [2, 1, 3]
