"""Every bad input reaches the user as one line naming the file and the fix, never as a traceback: the
`sparsehead` command, run as a user runs it, is given each kind of damaged or unusable input (a config
that is not a mapping or not text, a damaged config.yaml, environment.json, evaluation progress or
checkpoint of a run folder, a run folder that cannot be written, a split file that is not text, a
data.image_size whose views cannot fit in memory) and must exit with the documented
status 2 (docs/reliability.md), print no traceback, and name the file.

The CLI subprocesses import this module as a plugin (SPARSEHEAD_PLUGINS) to inject what a test
machine cannot make for real: a read-only file system (these tests run as root, whom chmod does not
stop), and an evaluation whose progress file outlives it."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO, SRC, TESTS, TINY, run_cli

READ_ONLY = "SPARSEHEAD_TEST_READ_ONLY"  # a folder the CLI subprocess may not write under
KEEP_PROGRESS = "SPARSEHEAD_TEST_KEEP_PROGRESS"  # the evaluation progress file is not removed at the end


def _inject_faults() -> None:
    """Run in the CLI subprocess, which imports this module as a plugin."""
    if root := os.environ.get(READ_ONLY):
        from sparsehead.core import atomic

        real = atomic.tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if Path(dir).resolve().is_relative_to(Path(root).resolve()):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return real(*args, dir=dir, **kwargs)

        atomic.tempfile.mkstemp = mkstemp
    if os.environ.get(KEEP_PROGRESS):
        from sparsehead.evaluate.progress import Progress

        Progress.finish = lambda self: None


_inject_faults()

PLUGIN = {
    "SPARSEHEAD_PLUGINS": "test_bad_input_sweep",
    "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}",
    "OMP_NUM_THREADS": "1",
}
LINEAR = ["--protocol", "linear", "--linear-recipe", "sgd-augment", "--epochs", "1", "--batch-size", "256"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny finished run."""
    root = tmp_path_factory.mktemp("sweep")
    proc = run_cli(
        "pretrain", *TINY, "train.max_steps=2", "train.threads=1", "--run-dir", str(root / "run"), env=PLUGIN
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "run"


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def damage(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


BINARY = bytes(range(256)) * 4


def case_config_not_a_mapping(run, tmp):
    return damage(tmp / "list.yaml", b"- train\n- epochs\n"), ["pretrain", "--config", str(tmp / "list.yaml")]


def case_config_not_text(run, tmp):
    return damage(tmp / "binary.yaml", BINARY), ["pretrain", "--config", str(tmp / "binary.yaml")]


def case_config_not_yaml(run, tmp):
    return damage(tmp / "bad.yaml", b"train: {epochs: [1\n"), ["pretrain", "--config", str(tmp / "bad.yaml")]


def _run_config(content: bytes):
    def case(run, tmp):
        copy = copy_of(run, tmp)
        return damage(copy / "config.yaml", content), ["pretrain", "--resume", str(copy)]

    return case


def case_run_file_damaged(run, tmp):
    copy = copy_of(run, tmp)
    return damage(copy / "run.json", BINARY), ["pretrain", "--resume", str(copy)]


def case_report_config_damaged(run, tmp):
    copy = copy_of(run, tmp)
    return damage(copy / "config.yaml", b"train: {epochs: [1\n"), ["report", str(copy)]


def case_environment_damaged(run, tmp):
    copy = copy_of(run, tmp)
    return damage(copy / "environment.json", b'{"attempts": [{"host": '), ["pretrain", "--resume", str(copy)]


def case_environment_not_text(run, tmp):
    copy = copy_of(run, tmp)
    return damage(copy / "environment.json", BINARY), ["pretrain", "--resume", str(copy)]


def case_checkpoints_damaged(run, tmp):
    copy = copy_of(run, tmp)
    for path in (copy / "checkpoints").glob("ckpt-*.pt"):
        damage(path, path.read_bytes()[:500])
    return copy / "checkpoints", ["pretrain", "--resume", str(copy)]


def case_checkpoint_damaged_for_evaluate(run, tmp):
    copy = copy_of(run, tmp)
    (path,) = (copy / "checkpoints").glob("ckpt-*.pt")
    return damage(path, path.read_bytes()[:-100]), ["evaluate", str(copy), "--protocol", "knn", "--device", "cpu"]


def case_progress_damaged(run, tmp):
    copy = copy_of(run, tmp)  # the progress file is keyed by the checkpoint's path: made for the copy
    args = ["evaluate", str(copy), *LINEAR, "--device", "cpu"]
    proc = run_cli(*args, env={**PLUGIN, KEEP_PROGRESS: "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = (copy / "eval" / "progress").iterdir()
    return damage(path, path.read_bytes()[:200]), args


def case_evaluate_read_only(run, tmp):
    copy = copy_of(run, tmp)
    shutil.rmtree(copy / "features", ignore_errors=True)
    return copy, ["evaluate", str(copy), "--protocol", "knn", "--device", "cpu"], {READ_ONLY: str(copy)}


def case_analyze_read_only(run, tmp):
    copy = copy_of(run, tmp)
    return copy, ["analyze", str(copy), "--device", "cpu"], {READ_ONLY: str(copy)}


def case_split_not_text(run, tmp):
    split = damage(tmp / "1percent.txt", BINARY)
    return split, ["evaluate", str(run), "--protocol", "semisup", "--split", str(split), "--device", "cpu"]


def case_image_size_beyond_memory(run, tmp):
    # digits are held at 8 px, so only the views are at image_size: 15 TB for a batch of 64
    args = ["pretrain", *TINY, "data.image_size=100000", "--run-dir", str(tmp / "huge")]
    return "data.image_size=100000", args


CASES = {
    "config-not-a-mapping": case_config_not_a_mapping,
    "config-not-text": case_config_not_text,
    "config-not-yaml": case_config_not_yaml,
    "run-config-not-text": _run_config(BINARY),
    "run-config-not-yaml": _run_config(b"train: {epochs: [1\n"),
    "run-config-not-a-mapping": _run_config(b"just a sentence\n"),
    "run-file-damaged": case_run_file_damaged,
    "report-run-config-damaged": case_report_config_damaged,
    "environment-damaged": case_environment_damaged,
    "environment-not-text": case_environment_not_text,
    "checkpoints-all-damaged": case_checkpoints_damaged,
    "checkpoint-damaged-evaluate": case_checkpoint_damaged_for_evaluate,
    "progress-damaged": case_progress_damaged,
    "evaluate-read-only-run": case_evaluate_read_only,
    "analyze-read-only-run": case_analyze_read_only,
    "split-not-text": case_split_not_text,
    "image-size-beyond-memory": case_image_size_beyond_memory,
}


def test_exit_status_2_is_documented():
    assert "| 2 | an error with a message" in (REPO / "docs" / "reliability.md").read_text()


@pytest.mark.parametrize("name", CASES)
def test_a_bad_input_is_one_line_naming_the_file(run, tmp_path, name):
    named, args, *extra = CASES[name](run, tmp_path)
    proc = run_cli(*args, env={**PLUGIN, **(extra[0] if extra else {})}, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and str(named) in lines[0], proc.stderr[-3000:]
    print(f"{name}: {lines[0]}")
