"""scripts/reproduce.py: the verdict rule against hand-computed values, and `write` on a synthetic grid
whose means and verdicts are known in advance."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil

import pytest
from scipy import stats

from conftest import REPO

spec = importlib.util.spec_from_file_location("reproduce", REPO / "scripts" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)


def test_verdict_uses_twice_the_welch_standard_error():
    # means 2 and 5, each sample variance 1 over 3 seeds: SE = sqrt(1/3 + 1/3) = 0.8165, 2 SE = 1.63;
    # equal variances and sizes make Welch's degrees of freedom 2 (n - 1) = 4
    p_far = 2 * stats.t.sf(3 / math.sqrt(2 / 3), df=4)
    p_near = 2 * stats.t.sf(1 / math.sqrt(2 / 3), df=4)
    assert reproduce.verdict([1, 2, 3], [4, 5, 6]) == f"held (+3.00, 2 SE = 1.63, p = {p_far:.2g})"
    assert reproduce.verdict([4, 5, 6], [1, 2, 3]) == f"reversed (-3.00, 2 SE = 1.63, p = {p_far:.2g})"
    assert reproduce.verdict([1, 2, 3], [2, 3, 4]) == f"inside the noise (+1.00, 2 SE = 1.63, p = {p_near:.2g})"
    assert p_far == pytest.approx(0.0213, abs=1e-4) and p_near == pytest.approx(0.288, abs=1e-3)
    assert reproduce.verdict([1], [2, 3]) == "too few seeds"


def fake_run(run, linear, knn, erank_r, erank_z, support):
    (run / "eval").mkdir(parents=True)
    (run / "analysis").mkdir()
    (run / "eval" / "linear.json").write_text(json.dumps({"r": {"top1": linear / 100, "top5": 0.9}}))
    (run / "eval" / "knn.json").write_text(json.dumps({"r": {"top1": knn / 100, "weighted_top1": 0.3}}))
    # `support` columns of norm 1 and the rest at 0.05: 0.1 x largest keeps the same columns as 1e-3
    norms = [1.0] * support + [0.05] * (512 - support) if support is not None else []
    head = [{"support": support, "shape": [128, 512], "column_norms": norms, "l21": sum(norms)}] if norms else []
    (run / "analysis" / "analysis.json").write_text(
        json.dumps(
            {
                "r": {"dim": 128, "effective_rank": erank_r, "collapsed_dims": 0},
                "z": {"dim": 64, "effective_rank": erank_z, "collapsed_dims": 3},
                "head": head,
            }
        )
    )
    (run / "wall_seconds.json").write_text(json.dumps({"pretrain": 120.0, "linear": 60.0}))


@pytest.fixture
def synthetic_grid(tmp_path, monkeypatch):
    """Every cell over seeds 0-2; SparseHead (lambda 1e-4) adds exactly 3 points of linear accuracy
    to SimCLR, lambda 1e-2 loses 10, seed noise is -1/0/+1."""
    runs = tmp_path / "runs"
    for cell in reproduce.CELLS:
        for seed, noise in zip(range(3), (-1.0, 0.0, 1.0)):
            lam = float(cell.split("lam")[-1]) if "lam" in cell else 0.0
            linear = 40.0 + noise + (3.0 if cell == "simclr-mlp-lam0.0001" else 0.0) - (10.0 if lam == 1e-2 else 0.0)
            support = None if cell == "simclr-identity" else (100 if lam == 1e-2 else 512)
            fake_run(runs / f"{cell}-s{seed}", linear, 30.0 + noise, 200.0 + noise, 50.0, support)
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  epochs: 5\n")
    monkeypatch.setattr(reproduce, "RUNS", runs)
    monkeypatch.setattr(reproduce, "BASE", base)
    monkeypatch.setattr(reproduce, "DOC", tmp_path / "docs" / "reproduction.md")
    monkeypatch.setattr(reproduce, "FIGURES", tmp_path / "docs" / "figures" / "reproduction")
    (tmp_path / "docs").mkdir()
    return tmp_path


def test_write_reports_means_verdicts_and_the_lambda_figure(synthetic_grid):
    reproduce.write_doc([0, 1, 2])
    doc = (synthetic_grid / "docs" / "reproduction.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in doc.splitlines() if line.startswith("| ")}
    assert "| SimCLR | 3 | 40.00 ± 1.00 | 30.00 ± 1.00 | 91.80 / 88.42 |" in doc
    assert "| SimCLR + SparseHead | 3 | 43.00 ± 1.00 |" in doc
    assert "held (+3.00, 2 SE = 1.63, p = 0.021)" in rows["SimCLR: SparseHead effect"]
    assert "inside the noise (+0.00" in rows["BYOL: SparseHead effect"]
    assert "reversed (-10.00" in rows["2. lambda = 0.01 beats lambda = 0"]
    assert "| 0.01 | 30.00 ± 1.00 | 30.00 ± 1.00 | 100.00 ± 0.00 of 512 | 100.00 ± 0.00 | 120.60 ± 0.00 |" in doc
    assert "held (+412.00" in rows["2. Larger lambda, smaller head support"]
    assert "held (+412.00" in rows["2. Larger lambda, fewer large head columns"]
    assert "| simclr-linear | 128 / 64 | 200.00 ± 1.00 | 50.00 ± 0.00 | 0.00 ± 0.00 | 3.00 ± 0.00 |" in doc
    assert (synthetic_grid / "docs" / "figures" / "reproduction" / "lambda_sweep.png").stat().st_size > 1000
    runs = 3 * len(reproduce.CELLS)  # every cell, 3 seeds, 3 minutes each (13 cells + issue 17's prune cell: 42)
    assert f"{runs} runs, {3 * runs} min of wall time in all (3.0 min per run" in doc


def test_write_keeps_the_hand_written_discussion(synthetic_grid):
    doc = synthetic_grid / "docs" / "reproduction.md"
    doc.write_text("# old numbers\n\n| stale | 1 |\n\n## Discussion\n\nRead by hand.\n")
    reproduce.write_doc([0, 1, 2])
    text = doc.read_text()
    assert "stale" not in text and "| SimCLR | 3 |" in text
    assert text.endswith("\n## Discussion\n\nRead by hand.\n")


def test_the_ledger_keeps_finished_runs_and_write_long_reports_them(synthetic_grid, monkeypatch):
    """A finished run goes into the ledger, is read from it once its folder is gone, is not run
    again, and the longer experiment's table is written between the documents' markers."""
    monkeypatch.setattr(reproduce, "LEDGER", synthetic_grid / "docs" / "results" / "long.json")
    started = []
    monkeypatch.setattr(reproduce.subprocess, "run", lambda cmd, **kw: started.append(cmd))
    for run in (reproduce.RUNS).iterdir():  # the grid's other step outputs, so every step is done
        (run / "results.json").write_text("{}")
    reproduce.run_grid(reproduce.EXPERIMENTS["long"], [0, 1, 2], dry=False)
    assert started == []
    entries = json.loads(reproduce.LEDGER.read_text())
    assert sorted(entries) == sorted(f"{c}-s{s}" for c in reproduce.EXPERIMENTS["long"] for s in range(3))
    # 512 columns of norm 1: the largest ceil(51.2) = 52 hold 52 / 512 of the L2,1 norm, Gini 0
    assert entries["simclr-mlp-lam0-s0"]["top10_share"] == pytest.approx(52 / 512)
    assert entries["simclr-mlp-lam0-s0"]["gini"] == pytest.approx(0.0, abs=1e-12)
    shutil.rmtree(reproduce.RUNS)  # a later session: the run folders are gone, the ledger is not
    reproduce.run_grid(reproduce.EXPERIMENTS["long"], [0, 1, 2], dry=False)
    assert started == []
    for name in ("reproduction.md", "sparsehead.md"):
        (synthetic_grid / "docs" / name).write_text(
            "# doc\n\n<!-- begin long (generated) -->\nold\n<!-- end long -->\n\n## Discussion\n"
        )
    reproduce.write_long([0, 1, 2])
    doc = (synthetic_grid / "docs" / "sparsehead.md").read_text()
    assert "old" not in doc and doc.endswith("<!-- end long -->\n\n## Discussion\n")
    assert "| penalty (the paper) | 1e-4 | 3 | 43.00 ± 1.00 | 30.00 ± 1.00 | 512.00 ± 0.00 of 512 |" in doc
    assert "| penalty (the paper) against none | held (+3.00, 2 SE = 1.63" in doc
