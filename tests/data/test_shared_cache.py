"""The processes of a node share one decoded copy of a folder data set: the first to take the
cache's lock decodes, the others wait and map the same file (memory measured from /proc), and the
memory budget is a node's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import make_imagefolder
from ddp_harness import run_on_ranks
from sparsehead import config
from sparsehead.data import datasets, storage
from sparsehead.data.errors import DataError


def _mapped_kb(path_part: str) -> tuple[int, int]:
    """(Rss, Pss) in kB of this process's mappings of files whose path contains `path_part`."""
    rss = pss = 0
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = path_part in line
        elif inside and line.startswith("Rss:"):
            rss += int(line.split()[1])
        elif inside and line.startswith("Pss:"):
            pss += int(line.split()[1])
    return rss, pss


def load_on_rank(rank: int, root: str, cache_dir: str) -> dict:
    """Load the training split while counting this process's decodes; touch every page."""
    decodes = []
    decode = datasets.decode_resized

    def counting(*args):
        decodes.append(1)
        return decode(*args)

    datasets.decode_resized = counting
    cfg = config.load(None, ["data.source=imagefolder", f"data.root={root}", f"data.cache_dir={cache_dir}"]).data
    data = datasets.load(cfg, "train")
    total = data.images.sum(dtype=torch.int64)  # every page read, so both processes hold all of them
    torch.distributed.barrier()  # both mapped and touched before measuring
    rss, pss = _mapped_kb(cache_dir)
    torch.distributed.barrier()
    return {
        "decodes": torch.tensor(len(decodes)),
        "images": data.images.clone(),
        "total": total,
        "rss_kb": torch.tensor(rss),
        "pss_kb": torch.tensor(pss),
        "bytes": torch.tensor(data.images.numel()),
    }


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="reads the mappings from /proc/self/smaps")
def test_two_processes_decode_once_and_share_the_mapped_cache(tmp_path):
    make_imagefolder(tmp_path / "d", per_class=200)  # 400 training JPEGs: 1.2 MB decoded at 32 px
    ranks = run_on_ranks(load_on_rank, str(tmp_path / "d"), str(tmp_path / "cache"))
    assert sorted(int(r["decodes"]) for r in ranks) == [0, 400]  # one process decoded, the other waited
    assert torch.equal(ranks[0]["images"], ranks[1]["images"])
    for r in ranks:
        rss, pss, size_kb = int(r["rss_kb"]), int(r["pss_kb"]), int(r["bytes"]) // 1024
        print(f"mapped cache: Rss {rss} kB, Pss {pss} kB for {size_kb} kB of images")
        assert rss >= size_kb  # the images are the file's pages...
        assert pss <= 0.6 * rss  # ...which the two processes share: each is charged about half


def test_the_memory_budget_is_a_node_budget(tmp_path, monkeypatch):
    make_imagefolder(tmp_path, per_class=20)  # 40 images: 122,880 bytes decoded at 32 px
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    budget = 3e-4  # GB: one copy fits, four do not

    def cfg(**kw):
        overrides = [f"data.root={tmp_path}", "data.source=imagefolder", "data.storage=memory"]
        return config.load(None, overrides + [f"data.{k}={v}" for k, v in {"memory_budget_gb": budget, **kw}.items()])

    assert storage.choose(cfg(cache_dir=str(tmp_path / "cache")).data, "train") == "memory"  # shared: one copy
    with pytest.raises(DataError, match="4 processes of this node each hold .* set data.cache_dir"):
        storage.choose(cfg(cache_dir="null").data, "train")
