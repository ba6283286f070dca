"""Every command on a folder data set, decoded in memory and streamed: pretrain, `sparsehead evaluate`
with each protocol and `sparsehead analyze` end to end, and the same evaluation features from both
storages of the same files."""

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

CLASSES = ("ant", "bee")


def make_folder(root, train_per_class=20, test_per_class=10):
    """Tiny JPEGs of varied sizes (40-60 px a side, landscape and portrait), a colour per class."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(40, 61, size=2))
                img = rng.integers(0, 80, size=(h, w, 3)) + np.array([160, 40, 90]) * (np.arange(3) == c)
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / split / name / f"{i}.jpg", quality=90)


def tiny(root, out, storage):
    return [
        *TINY_FOLDER,
        f"data.root={root}",
        f"data.storage={storage}",
        f"data.workers={1 if storage == 'stream' else 0}",  # a worker process decodes the streamed batches
        "train.max_steps=3",
        f"train.out_dir={out}",
        f"train.run_name={storage}",
    ]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    make_folder(root)
    return root


@pytest.fixture(scope="module")
def runs(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    made = {}
    for storage in ("memory", "stream"):
        proc = run_cli("pretrain", *tiny(folder, out, storage), env={"OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        made[storage] = out / storage
    return made


PROTOCOL_ARGS = {
    "knn": ["--k", "3", "--k-weighted", "10"],
    "ncc": [],
    "linear": [],
    "semisup": ["--epochs", "2", "--batch-size", "8"],
}


@pytest.mark.parametrize("storage", ["memory", "stream"])
def test_every_protocol_and_analyze(runs, storage):
    run = runs[storage]
    for protocol, extra in PROTOCOL_ARGS.items():
        assert cli.main(["evaluate", str(run), "--protocol", protocol, "--device", "cpu", *extra]) == 0, protocol
        record = json.loads((run / "eval" / f"{protocol}.json").read_text())
        assert record["data"]["train_images"] == 40 and record["data"]["test_images"] == 20
        assert "r" in record
    assert cli.main(["analyze", str(run), "--device", "cpu"]) == 0
    analysis = json.loads((run / "analysis" / "analysis.json").read_text())
    assert analysis["data"]["storage"] == storage and "r" in analysis and "z" in analysis
    assert (run / "analysis" / "report.html").is_file()


def test_memory_and_stream_give_the_same_evaluation_features(runs, folder):
    trained = load_trained(runs["memory"], torch.device("cpu"))
    sets = {
        storage: datasets.load(
            config.with_data_overrides(trained.cfg, (f"storage={storage}", "workers=0")).data, "test"
        )
        for storage in ("memory", "stream")
    }
    assert type(sets["memory"]) is not type(sets["stream"])
    for a, b in zip(sets["memory"].eval_batches(7), sets["stream"].eval_batches(7)):
        assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape and a.shape[1:] == (3, 16, 16)
        assert torch.equal(a, b)  # the same decode, the same centre crops
    assert torch.equal(sets["memory"].labels, sets["stream"].labels)
    (r_m, z_m), (r_s, z_s) = (extract(trained.method, sets[s], trained.views, torch.device("cpu"), 6) for s in sets)
    assert r_m.shape == (20, r_m.shape[1]) and z_m.shape[0] == 20
    torch.testing.assert_close(r_m, r_s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z_m, z_s, rtol=1e-5, atol=1e-5)


def test_eval_batches_in_order_for_given_indices(folder):
    for storage in ("memory", "stream"):
        flags = [f"data.root={folder}", "data.source=imagefolder", "data.cache_dir=null", "data.workers=0"]
        data = datasets.load(config.load(None, [*flags, f"data.storage={storage}"]).data, "train")
        every = torch.cat(list(data.eval_batches(16)))
        assert every.shape == (len(data), *data.item_shape)
        picked = [5, 0, 33, 12]
        assert torch.equal(torch.cat(list(data.eval_batches(3, indices=picked))), every[picked])
        assert [len(b) for b in data.eval_plan([[1, 2], [3], [0, 4, 5]])] == [2, 1, 3]
