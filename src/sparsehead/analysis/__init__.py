"""Dimensional-collapse diagnostics of feature matrices (torch or numpy, (samples, dims)), gathered
here from where each is computed (maths/spectrum.py, maths/centres.py, metrics.py, sparsity.py).

from sparsehead.analysis import spectrum, effective_rank, rankme, min_max_ratio
eigs = spectrum(z)                      # covariance eigenvalues, descending
collapsed_dimensions(eigs)              # how many are below 1e-5 x the largest
"""

from sparsehead.analysis.metrics import (
    alignment,
    centre_divergence,
    delta_mu,
    diagnostics,
    min_max_ratio,
    nearest_centre_accuracy,
    spectral_summary,
    uniformity,
)
from sparsehead.maths.centres import class_centres
from sparsehead.maths.spectrum import (
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
from sparsehead.sparsity import head_sparsity

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
