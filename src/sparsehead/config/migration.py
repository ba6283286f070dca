"""Configs saved by older run folders, brought to today's layout."""

from __future__ import annotations

from sparsehead.config.sections import MethodConfig
from sparsehead.methods import METHODS


def migrate(values: dict, schema: int) -> dict:
    """A config dict saved with run-folder schema `schema` (rundir.SCHEMA) in today's layout.

    Schema 1 (no run.json; sparsehead before the method registry) saved one flat method section
    holding the keys of every method; only the chosen method's keys are kept (the old code
    ignored the others). A config saved before optim.weight_decay_filter existed gets it disabled."""
    method = values.get("method") if isinstance(values, dict) else None
    if schema < 2 and isinstance(method, dict) and method.get("name", MethodConfig.name) in METHODS:
        keep = {"name", *METHODS[method.get("name", MethodConfig.name)].param_names()}
        values = {**values, "method": {k: v for k, v in method.items() if k in keep}}
    optim = values.get("optim", {}) if isinstance(values, dict) else None
    if isinstance(optim, dict) and "weight_decay_filter" not in optim:
        # Saved before optim.weight_decay_filter existed: weight decay acted on every parameter (one
        # group), which its checkpoints' optimiser state holds; auto would give a ViT two groups.
        values = {**values, "optim": {**optim, "weight_decay_filter": "disabled"}}
    return values
