"""The evaluation crop: torchvision's Resize + CenterCrop on a PIL image is the independent reference
for its geometry, and the crop ratio each source gets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_stream import data_cfg
from torchvision import transforms as T

from sparsehead.core.errors import ConfigError
from sparsehead.data import datasets, settings
from sparsehead.data.decode import resize_crop
from sparsehead.data.errors import DataError

# (height, width, crop size, ratio, the shorter side Resize takes: floor(size / ratio) written out)
CASES = [
    (300, 260, 224, 0.875, 256),  # ImageNet's Resize(256) + CenterCrop(224)
    (60, 45, 16, 0.875, 18),
    (37, 50, 16, 0.875, 18),  # landscape, odd margins: the crop offset's rounding shows
    (64, 64, 64, 0.875, 73),
    (23, 71, 32, 0.9, 35),  # upsampled
    (41, 63, 20, 1.0, 20),  # the whole shorter side
]


@pytest.mark.parametrize("h, w, size, ratio, short", CASES)
def test_eval_crop_is_torchvisions_resize_and_centre_crop(h, w, size, ratio, short):
    pixels = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)  # noise: a shift shows
    reference = T.Compose([T.Resize(short), T.CenterCrop(size)])(Image.fromarray(pixels))
    ours = resize_crop(torch.from_numpy(pixels).permute(2, 0, 1), size, ratio).permute(1, 2, 0).numpy()
    assert ours.shape == (size, size, 3)
    # PIL's and torch's antialiased bilinear agree to one level of rounding; a crop one pixel off
    # differs by tens of levels on average (noise), so this pins the geometry.
    assert np.abs(ours.astype(int) - np.asarray(reference, dtype=int)).max() <= 1


def test_crop_ratio_by_source_and_split(tmp_path):
    assert settings.crop_ratio_of(data_cfg(tmp_path, source="imagenet"), "test") == 0.875
    assert settings.crop_ratio_of(data_cfg(tmp_path, source="imagenet100"), "train") == 0.875
    for source in ("imagefolder", "tinyimagenet"):
        assert settings.crop_ratio_of(data_cfg(tmp_path, source=source), "test") == 1.0
    assert settings.crop_ratio_of(data_cfg(tmp_path, source="imagenet"), "pretrain") == 1.0  # training crops
    assert settings.crop_ratio_of(data_cfg(tmp_path, source="imagefolder", eval_crop=0.9), "test") == 0.9


def test_eval_crop_is_refused_where_no_file_is_decoded(tmp_path):
    with pytest.raises(DataError, match="data.eval_crop=0.875: .*data.source=digits .*drop data.eval_crop"):
        datasets.load(data_cfg(tmp_path, source="digits", eval_crop=0.875), "test")
    with pytest.raises(ConfigError, match="data.eval_crop: 1.5 is out of range; it must be <= 1.0"):
        data_cfg(tmp_path, source="imagenet", eval_crop=1.5)
