"""Experiment tracking: train.loggers' CSV mirror (stable header, keys that appear later), wandb in
offline mode (metrics read back from its .wandb transaction log), a failing tracker, and the run's
provenance (git commit, environment)."""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
import time

import pytest
import torch

from sparsehead import config
from sparsehead.core.errors import ConfigError
from sparsehead.runs import provenance
from sparsehead.runs.folder import RunDir
from sparsehead.runs.metrics_log import MetricLogger, check_loggers, read_metrics

RECORDS = [
    {"step": 1, "loss": 2.5, "lr": 0.1},
    {"step": 2, "loss": 2.0, "lr": 0.1},
    {"step": 2, "knn5_top1": 0.4},
    {"step": 3, "loss": 1.5, "lr": 0.05, "penalty": 0.0},
]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f)), f.seek(0) or f.readline().strip().split(",")


def as_csv_row(record, columns):
    return {c: "" if c not in record else str(record[c]) for c in columns}


def test_csv_has_every_key_as_a_column_rows_intact_and_resume_cuts_it_back(tmp_path):
    logger = MetricLogger(tmp_path, loggers=["jsonl", "csv"], run_info={})
    for r in RECORDS:
        logger.log(r)
    logger.close()
    rows, header = read_csv(tmp_path / "metrics.csv")
    assert header == ["step", "loss", "lr", "knn5_top1", "penalty"]  # first-seen order, step first
    assert rows == [as_csv_row(r, header) for r in RECORDS]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.jsonl"]  # no temporaries
    MetricLogger(tmp_path, loggers=["csv"], start_step=1).close()  # a resumed run restarting at step 1
    rows, header = read_csv(tmp_path / "metrics.csv")
    assert header == ["step", "loss", "lr"] and rows == [as_csv_row(RECORDS[0], header)]
    assert read_metrics(tmp_path) == RECORDS[:1]


def wandb_history(run_file) -> list[dict]:
    """The history records of a .wandb file: a LevelDB-style log (32 KiB blocks of records with a 7-byte
    header: crc32, length, type 1 full / 2 first / 3 middle / 4 last) after a 7-byte ':W&B' header,
    each payload a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, payload, records = run_file.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        payload += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(payload)
            records.append(record)
            payload = b""
    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]


def test_wandb_offline_run_holds_the_metrics_and_the_config(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    info = {"config": {"train": {"seed": 3}}, "environment": {"torch": torch.__version__}}
    logger = MetricLogger(tmp_path / "run", loggers=["wandb"], run_info=info)
    for r in RECORDS:
        logger.log(r)
    logger.close()
    (run_dir,) = (tmp_path / "wandb-home" / "wandb").glob("offline-run-*")
    (run_file,) = run_dir.glob("run-*.wandb")
    for _ in range(50):  # wandb's service process writes the log; under load it may trail finish()
        if len(history := wandb_history(run_file)) >= 3:
            break
        time.sleep(0.2)
    assert [h["_step"] for h in history] == [1, 2, 3]
    assert history[1]["loss"] == 2.0 and history[1]["knn5_top1"] == 0.4 and history[2]["penalty"] == 0.0
    assert (tmp_path / "run" / "wandb" / "run_id").read_text().strip() in run_file.name
    assert b'"seed":3' in run_file.read_bytes().replace(b" ", b"")  # the run's config went with it


def test_a_failing_tracker_warns_and_is_switched_off_while_jsonl_keeps_every_record(tmp_path):
    logger = MetricLogger(tmp_path, loggers=["csv"])

    def disk_full(record):
        raise OSError(28, "No space left on device")

    logger.sinks["csv"].log = disk_full
    with pytest.warns(UserWarning, match="csv failed at step 1.*switched off"):
        logger.log(RECORDS[0])
    logger.log(RECORDS[1])  # no second warning: it is off
    assert read_metrics(tmp_path) == RECORDS[:2] and not logger.sinks


def test_asking_for_an_uninstalled_tracker_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(ConfigError, match=r"wandb is not installed; pip install 'sparsehead\[wandb\]'"):
        check_loggers(["jsonl", "wandb"])
    with pytest.raises(ConfigError, match="train.loggers.*not allowed"):
        config.load(None, ["train.loggers=[jsonl,mlflow]"])
    assert config.load(None, ["train.loggers=[jsonl,csv]"]).train.loggers == ["jsonl", "csv"]


def test_git_commit_inside_and_outside_a_checkout_and_the_environment(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path / "repo"),
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    head = subprocess.run(
        ["git", "-C", str(tmp_path / "repo"), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert provenance.git_commit(tmp_path / "repo") == head and len(head) == 40
    (tmp_path / "plain").mkdir()
    assert provenance.git_commit(tmp_path / "plain") == "unknown"
    monkeypatch.setenv("PATH", str(tmp_path / "plain"))  # no git at all
    assert provenance.git_commit(tmp_path / "repo") == "unknown"
    env = provenance.environment(torch.device("cpu"))
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["hostname"]
    RunDir(tmp_path / "run").write_environment(env)
    RunDir(tmp_path / "run").write_environment(env)  # a resumed attempt is added, not overwritten
    assert json.loads((tmp_path / "run" / "environment.json").read_text())["attempts"] == [env, env]


def test_a_run_records_its_environment_and_mirrors_metrics_to_csv_and_tensorboard(tmp_path):
    from conftest import TINY
    from sparsehead.training.loop import pretrain

    cfg = config.load(None, TINY + ["train.max_steps=2", "train.loggers=[jsonl,csv,tensorboard]"])
    pretrain(cfg, tmp_path / "run")
    (attempt,) = json.loads((tmp_path / "run" / "environment.json").read_text())["attempts"]
    assert attempt["git_commit"] == provenance.git_commit() and attempt["torch"] == torch.__version__
    rows, header = read_csv(tmp_path / "run" / "metrics.csv")
    assert [as_csv_row(r, header) for r in read_metrics(tmp_path / "run")] == rows and "knn5_top1" in header
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    assert {"config/text_summary", "environment/text_summary"} <= set(events.Tags()["tensors"])
