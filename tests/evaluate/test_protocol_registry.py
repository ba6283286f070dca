"""Every protocol declares what the runner needs (result name, source, options), and every option of
`sparsehead evaluate` is declared exactly once: by one protocol, or in a set that several share."""

import dataclasses
import json
import re
from collections import Counter
from typing import ClassVar

import pytest
import torch

from sparsehead import cli
from sparsehead.core import options
from sparsehead.core.options import opt
from sparsehead.data.datasets import ImageSet
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.evaluate.options import EvalOptions, SharedOptions, eval_options, option_groups, option_sets
from sparsehead.evaluate.protocol import Protocol
from sparsehead.evaluate.registry import PROTOCOLS
from sparsehead.evaluate.runner import check_options


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_every_protocol_declares_its_result_name_source_and_settings(name):
    protocol = PROTOCOLS[name]
    opts = EvalOptions(protocol=name)
    assert protocol.name == name and protocol.summary
    assert re.fullmatch(r"[a-z0-9-]+", protocol.result_name(opts)), "a plain file name under run_dir/eval/"
    doc = type(protocol).__doc__ or ""
    assert "Source:" in doc and re.search(r"arXiv \d{4}\.\d{4,5}", doc), f"{name} cites no published protocol"
    json.dumps(protocol.settings(opts))  # the saved record's "options"


def test_each_option_belongs_to_exactly_one_protocol_or_shared_set():
    owners = Counter(f.name for s in option_sets() for f in dataclasses.fields(s))
    assert all(count == 1 for count in owners.values()), owners
    assert list(owners) == [f.name for f in dataclasses.fields(EvalOptions)]
    own = {f.name: p.name for p in PROTOCOLS.values() if p.Options for f in dataclasses.fields(p.Options)}
    shared = {
        f.name for p in PROTOCOLS.values() for s in (SharedOptions, *p.shared_options) for f in dataclasses.fields(s)
    }
    assert set(own).isdisjoint(shared) and set(own) | shared == set(owners)
    # Every option outside SharedOptions is shown in its protocol's group of --help.
    grouped = [n for names in option_groups().values() for n in names]
    assert sorted(grouped) == sorted(set(owners) - {f.name for f in dataclasses.fields(SharedOptions)})


def test_protocols_answer_the_runners_questions():
    linear = PROTOCOLS["linear"]
    assert linear.result_name(EvalOptions(protocol="linear")) == "linear"
    sgd = EvalOptions(protocol="linear", linear_recipe="sgd-augment", epochs=2)
    assert linear.result_name(sgd) == "linear-sgd-augment"
    assert not linear.uses_frozen_features(sgd) and not PROTOCOLS["semisup"].uses_frozen_features(sgd)
    assert linear.settings(sgd)["epochs"] == 2 and linear.settings(sgd)["lr_backbone"] is None
    assert PROTOCOLS["semisup"].settings(EvalOptions(protocol="semisup"))["lr_backbone"] == 0.005
    train = ImageSet(torch.zeros(12, 3, 4, 4, dtype=torch.uint8), torch.zeros(12, dtype=torch.long), ["0"])
    with pytest.raises(EvaluationError, match="--k-weighted 200 is larger than the training set"):
        PROTOCOLS["knn"].check_training_set(EvalOptions(k=3), train)
    PROTOCOLS["ncc"].check_training_set(EvalOptions(protocol="ncc"), train)


@dataclasses.dataclass
class ToyOptions:
    help_group: ClassVar[str] = "toy"
    toy_level: int = opt(3, "how many toy steps", min=1)


class ToyProtocol(Protocol):
    """A protocol as a plugin module declares it, registered long after sparsehead was imported."""

    summary = "a toy"
    Options = ToyOptions

    def settings(self, opts) -> dict:
        return {"toy_level": opts.toy_level}

    def run(self, trained, train, test, opts, device) -> dict:
        return {"r": {"top1": 1.0}}


def test_a_protocol_registered_after_import_gets_its_options_and_flags():
    PROTOCOLS.register("toy")(ToyProtocol())
    try:
        parse = cli.build_parser().parse_args
        opts = options.from_arguments(eval_options(), parse(["evaluate", "r", "--protocol", "toy", "--toy-level", "5"]))
        check_options(opts)
        assert (opts.protocol, opts.toy_level) == ("toy", 5)
        assert PROTOCOLS["toy"].settings(opts) == {"toy_level": 5}
        assert option_groups()["toy"] == ("toy_level",)
        bad = parse(["evaluate", "r", "--protocol", "toy", "--toy-level", "0"])
        with pytest.raises(options.ConfigError, match="--toy-level: 0 is out of range"):
            options.from_arguments(eval_options(), bad)
    finally:
        PROTOCOLS.unregister("toy")
    assert "toy_level" not in options.field_names(eval_options())  # gone with its protocol
    assert eval_options() is EvalOptions  # the built-in protocols' class again
