"""The prepared device session (docs/gpu.md): the bf16 peak by GPU model, the JSONs' names, the
ledger's record of a cell, and scripts/device_session.sh's dry run on a toy bundle (the ledger cell
only: the check's dry run is benchmarks/gpu_throughput.py's in tests/test_benchmarks.py, and .ci/run
runs the whole session's)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, SRC


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(REPO / "benchmarks"))  # gpu_throughput imports its helpers as top-level modules
gpu_throughput = load(REPO / "benchmarks" / "gpu_throughput.py")
sys.path.remove(str(REPO / "benchmarks"))  # the benchmarks' names (stream, knn, ...) stay off other tests' path
gpu_accuracy = load(REPO / "scripts" / "gpu_accuracy.py")


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),  # the SXM board, as torch names it
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", None),  # other clocks: not listed, so not guessed
        ("NVIDIA A100-SXM4-80GB", None),
        ("cpu", None),
    ],
)
def test_bf16_peak_by_gpu_model(name, peak):
    tflops, source = gpu_throughput.bf16_peak(name)
    assert tflops == peak
    assert ("datasheet" in source) == (peak is not None) and ("unknown" in source) == (peak is None)


def test_part_files_are_named_by_machine_torch_and_date(tmp_path):
    header = {"machine": {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130"}, "date": "2026-12-07"}
    path = gpu_throughput.part_path(tmp_path, "vit", header)
    assert path.name == "throughput_vit_h100-80gb-hbm3_torch2.11.0-cu130_2026-12-07.json"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", path.name)  # what the device tool brings back


def test_measured_img_per_s_reads_the_simclr_part_and_the_older_file(tmp_path):
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    new.write_text(json.dumps({"sparsehead": {"img_per_s": 11322.0}, "ratio_sparsehead_over_best_lightly": 0.5}))
    old.write_text(json.dumps({"simclr_resnet18": {"sparsehead": {"img_per_s": 9000.0}}}))
    assert gpu_accuracy.measured_img_per_s(new) == 11322.0
    assert gpu_accuracy.measured_img_per_s(old) == 9000.0
    assert gpu_accuracy.measured_img_per_s(tmp_path / "absent.json") is None


def test_record_writes_a_done_cell_into_the_ledger_and_refuses_a_dry_run(tmp_path):
    ledger = tmp_path / "gpu.json"
    shutil.copy(REPO / "docs" / "results" / "gpu.json", ledger)
    name = gpu_accuracy.next_cell(json.loads(ledger.read_text()))["name"]
    results = {"run_dir": "/tmp/x", "steps": 3900, "knn5_top1": 0.71, "knn200_weighted_top1": 0.72}
    cell = {"name": name, "status": "done", "epochs": 40, "wall_s": 301.26, "dry_run": False, "results": results}
    cell["machine"] = "one NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, 2026-12-07"
    path = tmp_path / f"{name}.cell.json"
    path.write_text(json.dumps({**cell, "dry_run": True}))
    with pytest.raises(SystemExit, match="dry run"):
        gpu_accuracy.record_cell(path, ledger)
    path.write_text(json.dumps(cell))
    gpu_accuracy.record_cell(path, ledger)
    entry = next(c for c in json.loads(ledger.read_text())["cells"] if c["name"] == name)
    assert entry["status"] == "done" and entry["epochs"] == 40 and entry["steps"] == 3900 and entry["wall_s"] == 301.3
    assert entry["knn5_top1"] == 0.71 and entry["knn200_weighted_top1"] == 0.72 and entry["machine"] == cell["machine"]
    assert gpu_accuracy.next_cell(json.loads(ledger.read_text()))["name"] != name


@pytest.mark.device_session  # a toy bundle, then a 2-epoch toy run of the ledger's next cell: about 15 s
def test_device_session_dry_run_brings_back_the_cell(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SRC), PYTHON=sys.executable, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    subprocess.run(
        [sys.executable, "scripts/device_bundle.py", "--toy", "128", "--out", str(bundle)],
        cwd=REPO,
        env=env,
        check=True,
    )
    done = subprocess.run(
        ["scripts/device_session.sh", "--dry-run", "--skip-check", "--bundle", str(bundle), str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = (out / "session.log").read_text() if (out / "session.log").is_file() else ""
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}\n{log[-3000:]}"
    session = json.loads((out / "session.json").read_text())
    name = session["cell"]["name"]
    assert session["cell"]["status"] == "done" and session["check_exit"] == "skipped"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["session.json", "session.log", f"{name}.cell.json", f"{name}.metrics.jsonl"]
    )
    assert "256 CIFAR-10 files" in log  # the bundle's tar.gz unpacked: 128 train + 128 test images
