"""The error of a data set that cannot be used (its own module: readers and loaders both raise it)."""

from __future__ import annotations

from sparsehead.core.errors import SparseheadError


class DataError(SparseheadError, RuntimeError):
    """A data set that cannot be used, with what to do about it."""
