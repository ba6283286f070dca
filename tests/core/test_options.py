"""One option system: declared fields give the flags, the help and the validation of
`sparsehead evaluate`; one meaning of --data; the final checkpoint is written once; the k-NN
report is one function."""

from __future__ import annotations

import argparse

import pytest
import torch

from sparsehead import cli, config
from sparsehead.core import options
from sparsehead.evaluate.knn import knn_accuracy, knn_report
from sparsehead.evaluate.runner import PROTOCOLS, EvalOptions, check_options
from sparsehead.runs import checkpoint


def parse(*argv):
    parser = argparse.ArgumentParser()
    options.add_arguments(parser, EvalOptions)
    return options.from_arguments(EvalOptions, parser.parse_args(list(argv)))


def test_flags_come_from_the_declarations_with_their_defaults_and_ranges():
    opts = parse("--protocol", "semisup", "--fractions", "0.01", "0.5", "--epochs", "3", "--with-z")
    assert opts == EvalOptions(protocol="semisup", fractions=(0.01, 0.5), epochs=3, with_z=True)
    assert parse("--protocol", "knn") == EvalOptions()
    for argv, message in [
        (["--k", "0"], "--k: 0 is out of range; it must be >= 1"),
        (["--val-fraction", "1"], "--val-fraction: 1.0 is out of range; it must be < 1"),
        (["--temperature", "0"], "--temperature: 0.0 is out of range; it must be > 0"),
        (["--epochs", "three"], "--epochs: expected an integer"),
    ]:
        with pytest.raises(config.ConfigError, match=message):
            parse("--protocol", "knn", *argv)
    with pytest.raises(config.ConfigError, match="--protocol: 'nope' is not allowed; choose one of knn"):
        check_options(EvalOptions(protocol="nope"))
    assert set(PROTOCOLS) == {"knn", "linear", "semisup", "ncc"}


def test_evaluate_help_lists_every_declared_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for name in options.field_names(EvalOptions):
        assert options.flag_of(next(f for f in EvalOptions.__dataclass_fields__.values() if f.name == name)) in text


def test_one_meaning_of_data():
    cfg = config.load(None, [])
    assert config.with_data_overrides(cfg, ["image_size=24", "data.subset=100"]).data.image_size == 24
    with pytest.raises(config.ConfigError, match="only data.\\* keys"):
        config.with_data_overrides(cfg, ["train.epochs=3"])
    with pytest.raises(config.ConfigError, match="expected KEY=VALUE"):
        config.with_data_overrides(cfg, ["root"])
    with pytest.raises(config.ConfigError, match="data.source.*change them with --data"):
        config.with_data_overrides(cfg, ["source=nope"])


def test_knn_report_is_the_two_votes():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    report = knn_report(x[:30], y[:30], x[30:], y[30:], k=3, k_weighted=10, temperature=0.1)
    assert report == {
        "top1": knn_accuracy(x[:30], y[:30], x[30:], y[30:], 3),
        "weighted_top1": knn_accuracy(x[:30], y[:30], x[30:], y[30:], 10, temperature=0.1),
    }


def test_the_final_checkpoint_is_written_once(tiny_cfg, tmp_path, monkeypatch):
    from sparsehead.training.loop import pretrain

    saved, real = [], checkpoint.save
    monkeypatch.setattr(
        checkpoint,
        "save",
        lambda run_dir, state, step, keep=3: (saved.append(step), real(run_dir, state, step, keep))[1],
    )
    pretrain(tiny_cfg("train.checkpoint_every=2", "train.max_steps=4"), tmp_path / "run")
    assert saved == [2, 4]
