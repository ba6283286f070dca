"""The error every evaluation raises for input it cannot use; the CLI prints it and exits 2."""

from sparsehead.core.errors import SparseheadError


class EvaluationError(SparseheadError, ValueError):
    """An evaluation that cannot run as asked (incompatible data, k too large, ...), with the fix."""
