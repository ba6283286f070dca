"""Every protocol declares what the runner needs (result name, source, options), and every option of
`sparsehead evaluate` is declared exactly once: by one protocol, or in a set that several share."""

import dataclasses
import json
import re
from collections import Counter

import pytest
import torch

from sparsehead.data.datasets import ImageSet
from sparsehead.evaluate.errors import EvaluationError
from sparsehead.evaluate.options import SharedOptions, option_sets
from sparsehead.evaluate.protocols import PROTOCOLS
from sparsehead.evaluate.runner import OPTION_GROUPS, EvalOptions


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
    grouped = [n for names in OPTION_GROUPS.values() for n in names]
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
