"""The maths several capabilities share, on plain tensors and arrays: covariance spectra and the rank
measures derived from them (spectrum.py), class centres (centres.py). The training monitors, the
evaluation protocols and the analysis all read it; it imports nothing of the package."""
