"""train.cuda_graphs: the configs that can never replay CUDA graphs are refused before any work, naming the fix."""

import pytest

from sparsehead import config
from sparsehead.config import ConfigError


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["train.cuda_graphs=true"], ["train.cuda_graphs=true needs train.compile=true", "set train.compile=true"]),
        (
            ["train.cuda_graphs=true", "train.compile=true", "train.device=cpu"],
            ["needs a CUDA device", "train.device=cpu", "train.cuda_graphs=false"],
        ),
    ],
)
def test_cuda_graphs_without_compile_or_on_the_cpu_is_refused(overrides, names):
    with pytest.raises(ConfigError) as err:
        config.load(None, overrides)
    assert all(name in str(err.value) for name in names), err.value


@pytest.mark.parametrize("device", ["auto", "cuda", "cuda:1"], ids=["auto", "gpu", "gpu1"])  # "cuda" marks GPU tests
def test_cuda_graphs_with_compile_loads_for_a_device_that_may_be_a_gpu(device):
    cfg = config.load(None, ["train.cuda_graphs=true", "train.compile=true", f"train.device={device}"])
    assert cfg.train.cuda_graphs and cfg.train.compile
