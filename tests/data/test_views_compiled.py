"""The views' call shape and its compiled colour chain: one random draw per call, one crop per size of
view, the compiled chain (augment.compile) giving the eager chain's views from the same uniforms,
and the bfloat16 output the eager float32 views rounded.

The compiled chain is torch.compile's inductor on the CPU (a C++ compiler builds its kernels: one
compile of a tiny batch, cached on disk by inductor for later runs)."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sparsehead import config
from sparsehead.data import colour as C
from sparsehead.data.views import ViewGenerator, colour_views, views_dtype

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
ALL_OPS = ["augment.blur_p=[1.0,0.5]", "augment.solarize_p=[0.0,0.5]", "augment.jitter_p=0.9"]


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched (what a GPU launches one kernel or more for)."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _views(*overrides, **kwargs):
    return ViewGenerator(config.load(None, list(overrides)).augment, 12, MEAN, STD, **kwargs)


def _images(n=6, size=16, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_a_call_draws_once_and_cuts_each_size_of_view_once():
    views = _views(*ALL_OPS, "method.name=swav", "augment.global_crops=3", "augment.local_crops=4")
    views.normalize(torch.zeros(1, 3, 1, 1))
    images = _images()
    with _OpCounter() as counter:
        out = views(images, torch.Generator().manual_seed(1))
    assert [v.shape[-1] for v in out] == [12] * 3 + [5] * 4
    drawn = {op: k for op, k in counter.ops.items() if op.startswith(("rand", "uniform", "normal", "bernoulli"))}
    assert drawn == {"rand": 1}, drawn  # every view's uniforms in one draw
    assert counter.ops["grid_sampler_2d"] == 2, counter.ops  # the global views, then the local crops


def test_a_simclr_call_dispatches_a_few_hundred_ops(monkeypatch):
    """Both views coloured in one chain: about 400 ops on a GPU (766 when each view had its own);
    the bound leaves room for torch versions."""
    monkeypatch.setattr(C, "CPU_CHUNK_VALUES", 2**40)  # one chunk, as on a GPU
    views = _views()
    views.normalize(torch.zeros(1, 3, 1, 1))
    images = _images()
    with _OpCounter() as counter:
        views(images, torch.Generator().manual_seed(2))
    assert sum(counter.ops.values()) < 500, sum(counter.ops.values())


def test_bfloat16_views_are_the_float32_views_rounded():
    images = _images()
    wide = _views(*ALL_OPS)(images, torch.Generator().manual_seed(3))
    narrow = _views(*ALL_OPS, dtype=torch.bfloat16)(images, torch.Generator().manual_seed(3))
    for a, b in zip(wide, narrow):
        assert b.dtype == torch.bfloat16 and torch.equal(b, a.to(torch.bfloat16))
    assert views_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    assert views_dtype("bf16", torch.device("cpu")) == views_dtype("fp16", torch.device("cuda")) == torch.float32


@pytest.mark.slow  # one inductor compile: about 20 s on a cold cache (2-core CPU), a few with inductor's disk cache
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None, reason="no C++ compiler")
def test_the_compiled_chain_gives_the_eager_views_from_the_same_uniforms():
    """Every colour op on (jitter, grayscale, blur, solarisation: each drawn for some images and not
    others), channels_last output: compiled and eager from the same generator seed agree to float
    rounding (inductor fuses and reorders the float32 arithmetic)."""
    images = _images(n=8)
    fmt = dict(memory_format=torch.channels_last)
    eager = _views(*ALL_OPS, **fmt)(images, torch.Generator().manual_seed(4))
    compiled_views = _views(*ALL_OPS, "augment.compile=true", **fmt)
    assert compiled_views.chain is not colour_views
    compiled = compiled_views(images, torch.Generator().manual_seed(4))
    for a, b in zip(eager, compiled):
        assert b.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4)
    assert not torch.allclose(eager[0], eager[1])
