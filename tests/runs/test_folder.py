"""RunDir: a run folder written before the method registry (schema 1: no run.json, one flat
method section with every method's keys, in config.yaml and in each checkpoint) still loads for
report, evaluate and resume; a newer schema and a record without a field are refused with the fix."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import TINY
from sparsehead import cli, config
from sparsehead.runs import checkpoint
from sparsehead.runs.folder import SCHEMA, RunDir, RunDirError
from sparsehead.training.loop import pretrain

# The method section every run folder of schema 1 saved (sparsehead at commit e148c6a), for BYOL.
FLAT_BYOL = {
    "name": "byol",
    "temperature": None,
    "momentum": 0.99,
    "predictor_hidden_dim": 32,
    "lambda_offdiag": 0.0051,
    "loss": "nt_xent",
    "huang_lambda": 1.0,
    "vicreg_sim_coeff": 25.0,
    "vicreg_std_coeff": 25.0,
    "vicreg_cov_coeff": 1.0,
    "queue_size": 4096,
    "moco_symmetric": False,
    "directclr_dim": None,
    "predictor_freq": 1,
    "predictor_rho": 0.3,
    "predictor_eps": 0.01,
    "directcopy_normalize": True,
    "wmse_w_size": 128,
    "wmse_w_iter": 1,
    "wmse_eps": 0.0,
    "swav_prototypes": 300,
    "swav_epsilon": 0.05,
    "swav_sinkhorn_iters": 3,
}


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A tiny BYOL run, rewritten into the layout of schema 1."""
    tmp = tmp_path_factory.mktemp("old")
    cfg = config.load(
        None, TINY + ["method.name=byol", "method.predictor_hidden_dim=32", "train.max_steps=2", f"train.out_dir={tmp}"]
    )
    run = RunDir(pretrain(cfg, tmp / "run")["run_dir"])
    flat = {**config.to_dict(cfg), "method": FLAT_BYOL}
    run.config_path.write_text(yaml.safe_dump(flat, sort_keys=False))
    run.run_file.unlink()
    for path in checkpoint.list_checkpoints(run.path):
        state = checkpoint.load(path)
        state.pop("schema")
        state.pop("format")
        path.unlink()
        checkpoint.save(run.path, {**state, "config": flat}, state["step"])
    return run


def test_an_old_run_folder_is_read_reported_evaluated_and_resumed(old_run, capsys):
    assert old_run.schema == 1
    assert old_run.read_config().method.params.predictor_hidden_dim == 32
    assert cli.main(["report", str(old_run.path)]) == 0
    assert "| BYOL | mlp | 0 | 1 |" in capsys.readouterr().out
    assert cli.main(["evaluate", str(old_run.path), "--protocol", "knn"]) == 0
    assert 0 <= old_run.read_eval("knn").number("r", "top1") <= 1
    assert cli.main(["pretrain", "--resume", str(old_run.path), "train.max_steps=3"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert old_run.schema == SCHEMA and old_run.read_results().field("steps") == 3


def test_a_newer_schema_and_a_missing_field_are_refused_with_the_fix(tmp_path):
    run = RunDir(tmp_path)
    run.run_file.write_text(json.dumps({"schema": SCHEMA + 1}))
    with pytest.raises(RunDirError, match="newer than this sparsehead"):
        run.schema
    run.run_file.unlink()
    run.eval_dir.mkdir()
    run.eval_path("knn").write_text(json.dumps({"r": {"weighted_top1": 0.5}}))
    with pytest.raises(RunDirError, match=r"knn.json has no field r.top1.*sparsehead evaluate"):
        run.read_eval("knn").number("r", "top1")
