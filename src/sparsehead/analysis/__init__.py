"""Dimensional-collapse diagnostics of feature matrices (torch or numpy, (samples, dims)).

from sparsehead.analysis import spectrum, effective_rank, rankme, min_max_ratio
eigs = spectrum(z)                      # covariance eigenvalues, descending
collapsed_dimensions(eigs)              # how many are below 1e-5 x the largest
"""

from sparsehead.analysis.metrics import (
    alignment,
    centre_divergence,
    class_centres,
    delta_mu,
    diagnostics,
    head_sparsity,
    min_max_ratio,
    nearest_centre_accuracy,
    spectral_summary,
    uniformity,
)
from sparsehead.core.spectrum import (
    ALPHA_FIT_RANKS,
    COLLAPSE_THRESHOLD,
    alpha_req,
    collapsed_dimensions,
    effective_rank,
    lidar,
    power_law_exponent,
    rankme,
    spectrum,
)

__all__ = [
    "spectrum",
    "collapsed_dimensions",
    "effective_rank",
    "rankme",
    "lidar",
    "alpha_req",
    "power_law_exponent",
    "min_max_ratio",
    "alignment",
    "uniformity",
    "class_centres",
    "centre_divergence",
    "delta_mu",
    "nearest_centre_accuracy",
    "head_sparsity",
    "spectral_summary",
    "diagnostics",
    "COLLAPSE_THRESHOLD",
    "ALPHA_FIT_RANKS",
]
