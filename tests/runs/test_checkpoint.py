"""Checkpoint files: loads never run code nor return damaged content; writes that fail (disk full,
unwritable folder) leave the previous checkpoint intact and say what to do."""

from __future__ import annotations

import ast
import errno
import os
import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch

from conftest import SRC, TINY
from sparsehead import config
from sparsehead.data import datasets
from sparsehead.export.formats import export_backbone
from sparsehead.runs import checkpoint
from sparsehead.runs.model import build_model
from sparsehead.training import resume
from sparsehead.training.loop import pretrain
from sparsehead.training.optim import build_optimizer


@pytest.fixture(scope="module")
def real_state():
    """What a run saves: a tiny model and its Adam state after a step, RNG states, config."""
    torch.manual_seed(0)
    cfg = config.load(None, TINY)
    method = build_model(cfg)
    optimizer = build_optimizer(cfg.optim, method)
    x = torch.rand(4, 3, 16, 16)
    method(x, x.flip(-1))[0].backward()
    optimizer.step()
    return {
        "model": method.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": 7,
        "rng": resume.gather_rng(resume.capture_rng(torch.Generator().manual_seed(1))),
        "config": config.to_dict(cfg),
        "data_mean": [0.5] * 3,
        "data_std": [0.25] * 3,
    }


def leaves(obj, path=""):
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in leaves(val, f"{path}.{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in leaves(val, f"{path}[{i}]").items()}
    return {path: obj}


def same_content(a: dict, b: dict) -> bool:
    la, lb = leaves(a), leaves(b)
    return la.keys() == lb.keys() and all(
        (
            isinstance(la[k], torch.Tensor)
            and isinstance(lb[k], torch.Tensor)
            and la[k].dtype == lb[k].dtype
            and torch.equal(la[k], lb[k])
        )
        or (not isinstance(la[k], torch.Tensor) and la[k] == lb[k])
        for k in la
    )


def test_a_saved_checkpoint_loads_back_identical(real_state, tmp_path):
    path = checkpoint.save(tmp_path, real_state, step=7)
    loaded = checkpoint.load(path)
    assert loaded.pop("format") == checkpoint.FORMAT
    assert same_content(loaded, real_state)


def test_truncated_checkpoint_never_loads(real_state, tmp_path):
    data = checkpoint.save(tmp_path / "run", real_state, step=7).read_bytes()
    rng = random.Random(0)
    offsets = sorted(
        {
            0,
            1,
            2,
            30,
            512,
            len(data) // 2,
            len(data) - 22,
            len(data) - 2,
            len(data) - 1,
            *rng.sample(range(len(data)), 150),
        }
    )
    damaged = tmp_path / "ckpt-00000007.pt"
    for cut in offsets:
        damaged.write_bytes(data[:cut])
        with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupt") as err:
            checkpoint.load(damaged)
        assert str(damaged) in str(err.value)
    print(f"{len(offsets)} truncation offsets of a {len(data)}-byte checkpoint: all refused")


def test_flipped_bytes_never_load_silently_wrong(real_state, tmp_path):
    data = checkpoint.save(tmp_path / "run", real_state, step=7).read_bytes()
    original = checkpoint.load(checkpoint.find(tmp_path / "run"))
    rng = random.Random(1)
    damaged = tmp_path / "ckpt-00000007.pt"
    outcomes = {"refused by the digest": 0, "refused by the reader": 0, "unchanged content": 0}
    for offset in rng.sample(range(len(data)), 100):
        corrupt = bytearray(data)
        corrupt[offset] ^= 1 << rng.randrange(8)
        damaged.write_bytes(bytes(corrupt))
        try:
            loaded = checkpoint.load(damaged)
        except checkpoint.CheckpointError as err:
            # a digest mismatch is a file torch.load alone would have returned with wrong content
            outcomes["refused by the digest" if "digest" in str(err) else "refused by the reader"] += 1
        else:  # only a byte no reader looks at (zip padding, an unused header field) may pass
            assert same_content(loaded, original), f"byte {offset} changed the content silently"
            outcomes["unchanged content"] += 1
    print(f"100 flipped bits: {outcomes}")
    assert outcomes["refused by the digest"] > 50  # most flips land in tensor bytes torch does not check


class RunsCode:
    """A pickle payload that would create a file when unpickled (as a real exploit would run code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    zipped = tmp_path / "run" / "checkpoints" / "ckpt-00000001.pt"
    zipped.parent.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(2)}, "extra": RunsCode(marker)}, zipped)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"model": RunsCode(marker)}, protocol=2))
    for path in (zipped, legacy):
        with pytest.raises(checkpoint.CheckpointError, match="refusing to load .* can run code"):
            checkpoint.load(path)
    with pytest.raises(checkpoint.CheckpointError, match="can run code"):
        export_backbone(tmp_path / "run", tmp_path / "backbone.pt")
    with pytest.warns(UserWarning, match="ignoring damaged data cache"):
        assert datasets._read_cache(zipped) is None  # the imagefolder cache is loaded the same way
    assert not marker.exists()
    torch.load(zipped, weights_only=False)  # the payload is live: an unsafe load does run it
    assert marker.exists()


def test_every_torch_load_in_the_source_uses_weights_only():
    calls = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                safe = any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords
                )
                calls.append((f"{path.relative_to(SRC)}:{node.lineno}", safe))
    assert len(calls) >= 2
    assert all(safe for _, safe in calls), [where for where, safe in calls if not safe]


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for step in range(1, 6):
        checkpoint.save(tmp_path, {"model": {"w": torch.full((2,), float(step))}}, step, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["ckpt-00000004.pt", "ckpt-00000005.pt"]


def disk_full_on_call(n: int):
    """A torch.save that writes part of the file, then fails as a full disk does, on call n."""
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    return save


def test_a_failed_checkpoint_write_leaves_the_previous_one_intact(real_state, tmp_path, monkeypatch):
    first = checkpoint.save(tmp_path, real_state, step=1)
    monkeypatch.setattr(torch, "save", disk_full_on_call(1))
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.save(tmp_path, real_state, step=2)
    msg = str(err.value)
    assert "No space left on device" in msg and str(first.parent) in msg and "ckpt-00000001.pt is intact" in msg
    assert os.listdir(first.parent) == [first.name]  # no partial file, no temp file
    assert checkpoint.load(first)["step"] == 7


def test_a_full_disk_mid_run_stops_it_with_the_last_checkpoint_intact(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", disk_full_on_call(3))
    run_dir = tmp_path / "run"
    with pytest.raises(
        checkpoint.CheckpointError, match="could not write a checkpoint, cannot write .*ckpt-00000003.pt"
    ):
        pretrain(tiny_cfg("train.checkpoint_every=1", "train.max_steps=5"), run_dir)
    kept = checkpoint.list_checkpoints(run_dir)
    assert [p.name for p in kept] == ["ckpt-00000001.pt", "ckpt-00000002.pt"]
    assert checkpoint.load(kept[-1])["step"] == 2
    assert not list(checkpoint.checkpoint_dir(run_dir).glob(".*.tmp"))


def forbid_data_loading(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the data was loaded before the run folder was checked")

    monkeypatch.setattr(datasets, "load", load)


def test_a_run_folder_under_a_file_fails_before_any_work(tiny_cfg, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    forbid_data_loading(monkeypatch)
    run_dir = tmp_path / "a-file" / "run"
    with pytest.raises(checkpoint.CheckpointError, match="cannot write to the run folder") as err:
        pretrain(tiny_cfg(), run_dir)
    assert str(run_dir) in str(err.value) and "--run-dir" in str(err.value)


def test_a_read_only_run_folder_fails_before_any_work(tiny_cfg, tmp_path, monkeypatch):
    forbid_data_loading(monkeypatch)

    def read_only(*args, **kwargs):  # tests run as root here, where chmod does not stop writes
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("sparsehead.core.atomic.tempfile.mkstemp", read_only)
    with pytest.raises(checkpoint.CheckpointError, match="cannot write to the run folder .*Read-only file system"):
        pretrain(tiny_cfg(), tmp_path / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_folder_without_write_permission_fails_before_any_work(tiny_cfg, tmp_path, monkeypatch):
    forbid_data_loading(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(checkpoint.CheckpointError, match="cannot write to the run folder"):
        pretrain(tiny_cfg(), locked / "run")


def test_too_little_disk_space_fails_before_training(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg()
    model = build_model(cfg)
    checkpoint.check_writable(tmp_path)
    checkpoint.check_free_space(tmp_path, model)  # the real disk has room
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 2**16, 2**16))
    with pytest.raises(checkpoint.CheckpointError, match=r"has 0.1 MiB free, but a checkpoint .* about [\d.]+ MiB"):
        pretrain(cfg, tmp_path / "run")
    assert not checkpoint.list_checkpoints(tmp_path / "run")
