# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.14.1 + torchvision 0.29.1 is the newest pair installable here (a CUDA build that runs on CPU).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# The oldest pair pyproject.toml declares (the GPU machine's): DDP, resume and pre-emption are tested on it too.
OLDEST_TORCH_PINS ?= torch==2.11.0 torchvision==0.26.0
OLDEST_VENV ?= .venv-oldest-torch
STAMP := $(VENV)/.installed

.PHONY: demo test test-slurm test-device-session test-oldest-torch venv clean bench docs device-bundle

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e ".[test,tensorboard,shards]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/sparsehead pretrain --config configs/demo.yaml --run-dir runs/demo

# The tests marked `numerics` (training learns, a resumed run is bitwise an unbroken one) run a
# second time under CPU kernels other than the machine's best (AVX2 on an AVX-512 machine, the
# plain ones on an AVX2 machine): a test that holds only for one float rounding cannot pass.
# Under oneDNN's AVX2 kernels the narrow test networks train contiguous (models/cpu_layout.py:
# their channels_last weight gradient corrupts the heap), so every numerics test runs here.
OTHER_KERNELS := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null \
	&& echo ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \
	|| echo ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41)

# pytest-xdist: one worker per core, each on one CPU thread; a module at a time to a worker (its
# reference runs are built once), the long modules first (tests/conftest.py orders them).
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slurm and not device_session" --durations=10
	env $(OTHER_KERNELS) $(BIN)/python -m pytest -q $(XDIST) -m numerics

# A GPU session's command (docs/gpu.md) at toy size on the CPU: the session with a toy bundle, the GPU
# benchmark's dry run (.ci/run runs them; kept out of `make test`, whose 10 minutes they would pass).
test-device-session: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m device_session

# The SLURM recipes under a stand-in SLURM (tests/scripts/test_slurm.py: minutes of 2-process runs), kept
# out of `make test`; .ci/run runs them here and, in test-oldest-torch, on the oldest declared torch.
test-slurm: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m slurm

# The distributed, resume and pre-emption tests (pretraining and evaluation) again on the oldest declared
# torch (.ci/run runs it).
test-oldest-torch:
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/pip install --quiet $(OLDEST_TORCH_PINS)
	$(OLDEST_VENV)/bin/pip install --quiet -e ".[test]"
	$(OLDEST_VENV)/bin/python -m pytest -q $(XDIST) tests/core/test_distributed.py tests/training/test_resume.py \
		tests/training/test_resume_agreement.py tests/training/test_preempt.py tests/training/test_stop_phases.py \
		tests/evaluate/test_ddp_probe.py tests/scripts/test_slurm.py

# Throughput of sparsehead vs lightly vs torchvision (docs/performance.md); needs ../shared/data/cifar10
# (or $SPARSEHEAD_CIFAR10). `--toy` runs every benchmark's steps in seconds (tests/test_benchmarks.py).
bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/throughput.py

# What a lent GPU machine lacks, in .device/ (ignored; the device `run` of docs/gpu.md carries it to
# scripts/device_session.sh): lightly's and torchcodec's wheels for its Python 3.12 (pip download, so an
# index must be reachable here) and CIFAR-10 from ../shared/data/cifar10 (or $$SPARSEHEAD_CIFAR10) as one
# tar.gz. Prints the sizes; fails if the bundle and the working tree exceed the 64 MiB a run carries.
device-bundle:
	$(PYTHON) scripts/device_bundle.py --out .device

# The documentation site (mkdocs.yml) into build/site/, warnings as errors: the API reference from the docstrings,
# the command-line reference from every sub-command's --help. `$(BIN)/mkdocs serve` previews it.
docs: $(STAMP)
	$(BIN)/pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(OLDEST_VENV) runs
