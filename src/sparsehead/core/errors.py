"""The one base class of every error the `sparsehead` command turns into a message (exit code 2;
Interrupted: 75).

Each module defines the errors of its own job as subclasses (ConfigError here, because every
layer raises it; DataError in data/datasets.py, CheckpointError in checkpoint.py, ...), so a
library user can catch SparseheadError for all of them, and the CLI catches nothing else.
"""


class SparseheadError(Exception):
    """Input or state sparsehead cannot use, with a message that says what to do."""


class ConfigError(SparseheadError, ValueError):
    """A configuration or option problem, with a message that names the key and the fix."""


EXIT_INTERRUPTED = 75  # EX_TEMPFAIL (sysexits.h): "try again later", here: continue me


class Interrupted(SparseheadError):
    """A job stopped by a signal after saving its progress (a pre-empted pretraining run, an
    interrupted probe): the `sparsehead` command exits EXIT_INTERRUPTED, and the message says how to
    continue it."""
