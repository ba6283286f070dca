"""The memory one batch of views needs is checked before any decoding or step (training/memory_check.py):
its estimate against a count written out by hand, and a refusal in one line, naming the batch and image
size and the fix, when the memory available (injected: a small /proc/meminfo) cannot hold it. The CLI
end of it (image_size=100000) is in tests/test_bad_input_sweep.py."""

from __future__ import annotations

import pytest
import torch

from sparsehead.core.errors import ConfigError
from sparsehead.training import memory_check

CPU = torch.device("cpu")


def test_views_bytes_counts_every_view_at_its_size(tiny_cfg):
    two_views = tiny_cfg("data.image_size=32")
    assert memory_check.views_bytes(two_views, 4) == 4 * 2 * 3 * 32 * 32 * 4
    multi = tiny_cfg("data.image_size=32", "method.name=swav", "augment.local_crops=6")
    local = round(32 * 96 / 224)  # SwAV's 96/224 of the image size: 14 px
    assert memory_check.views_bytes(multi, 4) == 4 * (2 * 3 * 32 * 32 + 6 * 3 * local * local) * 4


def _meminfo(tmp_path, monkeypatch, kilobytes: int):
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       99999999 kB\nMemFree:        1 kB\nMemAvailable:   {kilobytes} kB\n")
    monkeypatch.setattr(memory_check, "MEMINFO", path)


def test_a_batch_over_the_memory_available_is_refused_in_one_line(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("data.image_size=512", "train.batch_size=64")  # 64 x 2 x 3 x 512^2 x 4 bytes = 0.40 GB
    _meminfo(tmp_path, monkeypatch, 300_000)
    with pytest.raises(ConfigError) as caught:
        memory_check.check_views_fit(cfg, CPU)
    message = str(caught.value)
    assert "\n" not in message
    assert "train.batch_size=64" in message and "data.image_size=512" in message, message
    assert "needs 0.40 GB" in message and "than the 0.31 GB available" in message, message
    _meminfo(tmp_path, monkeypatch, 500_000)
    memory_check.check_views_fit(cfg, CPU)  # fits


def test_the_processes_of_a_node_each_hold_their_views(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("data.image_size=512", "train.batch_size=64")
    _meminfo(tmp_path, monkeypatch, 500_000)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="in each of 2 processes"):
        memory_check.check_views_fit(cfg, CPU)


def test_unknown_memory_refuses_nothing(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(memory_check, "MEMINFO", tmp_path / "absent")
    memory_check.check_views_fit(tiny_cfg("data.image_size=100000"), CPU)
