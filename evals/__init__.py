"""FID and FVD evaluation: detectors, feature statistics, Frechet distance, named protocols.

Stands alone: nothing here imports `maskgwm` or `repro`.
"""
