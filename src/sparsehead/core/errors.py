"""The one base class of every error the `sparsehead` command turns into a message (exit code 2).

Each module defines the errors of its own job as subclasses (ConfigError here, because every
layer raises it; DataError in data/datasets.py, CheckpointError in checkpoint.py, ...), so a
library user can catch SparseheadError for all of them, and the CLI catches nothing else.
"""


class SparseheadError(Exception):
    """Input or state sparsehead cannot use, with a message that says what to do."""


class ConfigError(SparseheadError, ValueError):
    """A configuration or option problem, with a message that names the key and the fix."""
