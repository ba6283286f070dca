"""The views on CUDA: the compiled colour chain (augment.compile) gives the eager views from the same
generator, bf16 views are the float32 views rounded, and neither path makes the host wait for the GPU
(sync debug mode "error" raises at a synchronising call).

Skipped without a GPU (tests/conftest.py); scripts/gpu_check.sh runs them on one."""

from __future__ import annotations

import pytest
import torch

from sparsehead import config
from sparsehead.data.views import ViewGenerator, views_dtype

pytestmark = pytest.mark.cuda
CUDA = "cuda"
ALL_OPS = ["augment.blur_p=[1.0,0.5]", "augment.solarize_p=[0.0,0.5]"]


def _views(*overrides, dtype=torch.float32):
    cfg = config.load(None, list(overrides)).augment
    return ViewGenerator(cfg, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.channels_last, dtype)


def _images(n=256, size=36):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _no_sync(views, images, seed):
    torch.cuda.set_sync_debug_mode("error")
    try:
        return views(images, torch.Generator(CUDA).manual_seed(seed))
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_compiled_views_on_cuda_equal_the_eager_views_and_make_no_sync():
    images = _images().to(CUDA)
    eager_views, compiled_views = _views(*ALL_OPS), _views(*ALL_OPS, "augment.compile=true")
    eager_views(images, torch.Generator(CUDA).manual_seed(9))  # warm-up: the constants moved, the chain compiled
    compiled_views(images, torch.Generator(CUDA).manual_seed(9))
    eager, compiled = _no_sync(eager_views, images, 1), _no_sync(compiled_views, images, 1)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4)


def test_bf16_views_on_cuda_are_the_float32_views_rounded():
    images = _images().to(CUDA)
    dtype = views_dtype("bf16", torch.device(CUDA))
    narrow_views = _views(*ALL_OPS, dtype=dtype)
    narrow_views(images, torch.Generator(CUDA).manual_seed(9))
    wide, narrow = _views(*ALL_OPS)(images, torch.Generator(CUDA).manual_seed(2)), _no_sync(narrow_views, images, 2)
    for a, b in zip(wide, narrow):
        assert b.dtype == torch.bfloat16 and b.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(b, a.to(torch.bfloat16))
