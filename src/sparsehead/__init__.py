"""sparsehead: self-supervised learning around the projection head.

SparseHead (an L2,1 penalty that sparsifies the projection head, Song et al. 2023) on top of
SimCLR, BYOL, Barlow Twins and more, with evaluation and dimensional-collapse diagnostics.
"""

__version__ = "0.1.0"
