"""Everything the data can tell before step 1 is checked in setup: an unreadable streamed image under
data.bad_images=fail (the default), a missing test split, a test class train lacks. Each is one line
(or a short list) naming the file or folder, before any step, checkpoint or metrics line."""

from __future__ import annotations

import shutil

import pytest

from conftest import TINY_FOLDER, make_imagefolder, run_cli


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda root: (root / "test" / "dog" / "1.jpg").write_bytes(b"not a jpeg"), "1.jpg"),
        (lambda root: shutil.rmtree(root / "test"), "test"),
        (lambda root: (root / "test" / "cat").rename(root / "test" / "bird"), "bird"),
    ],
    ids=["unreadable-streamed-test-image", "no-test-split", "test-class-train-lacks"],
)
def test_a_data_problem_stops_the_run_before_its_first_step(damage, named, tmp_path):
    root = tmp_path / "data"
    make_imagefolder(root)
    damage(root)
    run_dir = tmp_path / "run"
    proc = run_cli(
        "pretrain",
        *TINY_FOLDER,
        f"data.root={root}",
        "data.storage=stream",
        "data.workers=0",
        "--run-dir",
        str(run_dir),
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "error: " in proc.stderr and named in proc.stderr[proc.stderr.index("error: ") :], proc.stderr[-2000:]
    assert not (run_dir / "metrics.jsonl").exists() and not list(run_dir.glob("checkpoints/ckpt-*"))
