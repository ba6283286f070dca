"""One resume decision under DDP: rank 0 chooses the checkpoint, every rank loads exactly that file,
and a rank that sees another folder stops every rank with the shared-storage error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddp_harness import run_on_ranks
from sparsehead.runs import checkpoint
from sparsehead.runs.checkpoint import CheckpointError
from sparsehead.training import resume


def _save(run_dir: Path, step: int, value: float) -> None:
    checkpoint.save(run_dir, {"model": {"w": torch.full((3,), value)}, "format": checkpoint.FORMAT}, step)


def _resume_on(rank: int, folders: list[str]) -> dict:
    try:
        path, state = resume.agreed_checkpoint(Path(folders[rank]))
    except CheckpointError as err:
        return {"error": torch.tensor(list(str(err).encode()), dtype=torch.uint8)}
    return {"step": torch.tensor(int(path.stem.split("-")[1])), "w": state["model"]["w"]}


def _message(result: dict) -> str:
    return bytes(result["error"].tolist()).decode()


def test_every_rank_resumes_from_rank_0s_choice(tmp_path):
    shared = tmp_path / "run"
    _save(shared, 2, 1.0)
    _save(shared, 4, 2.0)
    results = run_on_ranks(_resume_on, [str(shared), str(shared)])
    assert [int(r["step"]) for r in results] == [4, 4]
    assert all(torch.equal(r["w"], torch.full((3,), 2.0)) for r in results)


@pytest.mark.parametrize("other", ["missing", "different"])
def test_a_rank_that_sees_another_folder_stops_every_rank(tmp_path, other):
    """Node-local run folders: rank 1's copy lacks the checkpoint, or holds other bytes under its name."""
    main, local = tmp_path / "node0", tmp_path / "node1"
    _save(main, 4, 2.0)
    _save(local, 2 if other == "missing" else 4, 3.0)
    results = run_on_ranks(_resume_on, [str(main), str(local)])
    assert all("error" in r for r in results), results
    for r in results:
        assert "rank 1" in _message(r) and "storage every node sees" in _message(r)
